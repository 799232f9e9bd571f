"""Imports run one way: tools over the library, train over data/models/convert, nothing in a circle.

Every `import rgbd_jax...` of every module counts, also the ones inside functions.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / 'rgbd_jax'

# package (or top-level module) -> what it may import from rgbd_jax, besides itself
ALLOWED = {
    'configs': set(),
    'parallel': set(),
    'hugepages': set(),
    'script_errors': set(),
    'checkpoint': {'configs'},
    'models': {'configs'},
    'data': {'configs'},
    'convert': {'configs', 'checkpoint', 'models'},
    'train': {'configs', 'parallel', 'hugepages', 'checkpoint', 'models', 'data', 'convert'},
    'predict': {'configs', 'parallel', 'checkpoint', 'models', 'data', 'convert', 'train'},
    'tools': {'configs', 'parallel', 'hugepages', 'checkpoint', 'models', 'data', 'convert', 'train',
              'predict'},
}


def _unit(module: str) -> str:
  """'rgbd_jax.train.loop' -> 'train'; 'rgbd_jax.configs' -> 'configs'."""
  return module.split('.')[1]


def _imports(path: pathlib.Path) -> set[str]:
  tree = ast.parse(path.read_text())
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('rgbd_jax'):
      if node.module == 'rgbd_jax':
        found |= {f'rgbd_jax.{a.name}' for a in node.names}
      else:
        found |= {f'{node.module}.{a.name}' for a in node.names}
    elif isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name.startswith('rgbd_jax')}
  return found


def _modules():
  for path in sorted(ROOT.rglob('*.py')):
    rel = path.relative_to(ROOT.parent).with_suffix('')
    name = '.'.join(rel.parts)
    if name.endswith('.__init__'):
      name = name[:-len('.__init__')]
    if name != 'rgbd_jax':
      yield name, path


def test_imports_run_one_way():
  wrong = []
  for name, path in _modules():
    unit = _unit(name)
    assert unit in ALLOWED, f'{name}: a new part of the library; place it in ALLOWED'
    for target in _imports(path):
      other = _unit(target)
      if other != unit and other not in ALLOWED[unit]:
        wrong.append(f'{name} imports {target}')
  assert not wrong, '\n'.join(wrong)


def test_no_import_circle_between_modules():
  modules = dict(_modules())
  graph = {}
  for name, path in modules.items():
    targets = set()
    for target in _imports(path):
      # 'rgbd_jax.data.sources.make_source' -> the module 'rgbd_jax.data.sources'
      parts = target.split('.')
      while parts and '.'.join(parts) not in modules:
        parts.pop()
      if parts and '.'.join(parts) != name:
        targets.add('.'.join(parts))
    graph[name] = targets
  seen, stack, circles = set(), [], []

  def visit(node):
    if node in stack:
      circles.append(stack[stack.index(node):] + [node])
      return
    if node in seen:
      return
    seen.add(node)
    stack.append(node)
    for nxt in graph.get(node, ()):
      visit(nxt)
    stack.pop()

  for node in graph:
    visit(node)
  assert not circles, circles


def test_the_data_side_knows_which_networks_read_rgb_and_depth():
  from rgbd_jax import configs  # pylint: disable=g-import-not-at-top
  from rgbd_jax.models import build  # pylint: disable=g-import-not-at-top
  paired = {name for name, kind in build.NETWORKS.items()
            if {'rgb', 'depth'} <= set(kind.input_keys)}
  assert paired == set(configs.RGBD_NETWORKS)
