"""What the tests share: tools runners (tools), tiny architectures (archs),
fabricated files in official layouts (fabricate), references written from
the published formulas and Meta's code (reference, meta_hub,
eomt_reference, timm_reference) and optional modules (modules.require)."""
