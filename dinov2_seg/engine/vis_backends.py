"""Visualisation backends named on the command line.

mmengine's ``--cfg-options`` parser cannot build a list of dicts, so
``visualizer.vis_backends=[LocalVisBackend,TensorboardVisBackend]`` arrives
as a list of names; each name becomes ``dict(type=name)``.
"""
import importlib.util

from mmengine.config import Config

# Backends whose package is optional, and the extra that installs it.
_NEEDS = {'TensorboardVisBackend': ('tensorboard', 'tensorboard')}


def expand_vis_backends(cfg: Config) -> None:
    """Turn backend names in ``cfg.visualizer.vis_backends`` into configs
    and check that the optional packages they need are installed.

    Raises:
        ImportError: naming the backend and how to install its package.
    """
    visualizer = cfg.get('visualizer')
    if not visualizer or not visualizer.get('vis_backends'):
        return
    backends = [
        dict(type=b) if isinstance(b, str) else b
        for b in visualizer['vis_backends']
    ]
    visualizer['vis_backends'] = backends
    for backend in backends:
        package, extra = _NEEDS.get(backend.get('type'), (None, None))
        if package and importlib.util.find_spec(package) is None:
            raise ImportError(
                f"visualizer.vis_backends has {backend['type']}, which needs "
                f"the {package} package: pip install -e '.[{extra}]' (or "
                f'pip install {package})')
