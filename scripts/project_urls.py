r"""Add the repository's own addresses to ``[project.urls]`` before a release build.

The package metadata cannot know where a copy of this repository is hosted, and guessing would
publish a wrong address. The release workflow runs this script with the addresses GitHub gives
it, so a fork publishes its own:

    python scripts/project_urls.py pyproject.toml --repo-url https://github.com/<owner>/kexue \
        --site-url https://<owner>.github.io/kexue/

It adds Homepage and Documentation (the site), Source (the repository) and Issues, and fails on
anything but https addresses or when the entries are already there.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path


def add_urls(text: str, repo_url: str, site_url: str) -> str:
    """Return ``text`` (a pyproject.toml) with the four addresses added to ``[project.urls]``."""
    for name, url in (("repo_url", repo_url), ("site_url", site_url)):
        if not url.startswith("https://") or any(c in url for c in "\"'\n "):
            raise ValueError(f"{name} must be a plain https:// address, got {url!r}")
    existing = tomllib.loads(text).get("project", {}).get("urls", {})
    urls = {
        "Homepage": site_url,
        "Documentation": site_url,
        "Source": repo_url,
        "Issues": repo_url.rstrip("/") + "/issues",
    }
    clash = sorted(set(urls) & set(existing))
    if clash:
        raise ValueError(f"[project.urls] already has {clash}")
    if "\n[project.urls]\n" not in text:
        raise ValueError("pyproject.toml has no [project.urls] table to extend")
    block = "".join(f'{name} = "{url}"\n' for name, url in urls.items())
    out = text.replace("\n[project.urls]\n", "\n[project.urls]\n" + block, 1)
    assert tomllib.loads(out)["project"]["urls"] == {**existing, **urls}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--repo-url", required=True)
    parser.add_argument("--site-url", required=True)
    args = parser.parse_args(argv)
    args.pyproject.write_text(add_urls(args.pyproject.read_text(encoding="utf-8"), args.repo_url, args.site_url),
                              encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
