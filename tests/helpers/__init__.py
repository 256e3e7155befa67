"""What the tests share: tools runners, fabricated files in official
layouts, and references written from the published formulas."""
