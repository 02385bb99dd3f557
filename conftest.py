"""Root pytest configuration: run documentation fences with the site build's semantics."""

pytest_plugins = ["kexue._pytest_docs"]
