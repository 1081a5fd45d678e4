"""The README stays short and every relative link in it and in docs/
resolves."""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r'\]\(([^)\s]+)\)')


def _pages():
  return [os.path.join(ROOT, 'README.md')] + sorted(
      glob.glob(os.path.join(ROOT, 'docs', '*.md')))


def test_the_readme_fits_in_150_lines():
  with open(os.path.join(ROOT, 'README.md')) as f:
    assert len(f.read().splitlines()) < 150


def test_every_relative_link_resolves():
  broken = []
  for page in _pages():
    with open(page) as f:
      text = f.read()
    for target in LINK.findall(text):
      if re.match(r'[a-z]+://|#|mailto:', target):
        continue
      path = os.path.join(os.path.dirname(page), target.split('#')[0])
      if not os.path.exists(path):
        broken.append('%s -> %s' % (os.path.relpath(page, ROOT), target))
  assert broken == []


def test_every_docs_page_is_linked_from_the_readme():
  with open(os.path.join(ROOT, 'README.md')) as f:
    linked = set(LINK.findall(f.read()))
  pages = ['docs/' + os.path.basename(p) for p in _pages()[1:]]
  assert [p for p in pages if p not in linked] == []
