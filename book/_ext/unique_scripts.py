"""Sphinx extension: include each script only once per page.

sphinx-thebe (which Jupyter Book 1 always loads) can register its inline configuration
script twice in one build; the page then declares `const THEBE_JS_URL` twice and the
browser reports a JavaScript error on every page. Dropping exact duplicates fixes that
without touching anything else.
"""


def _drop_duplicate_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        # The same inline script may come once with filename None and once with "".
        filename = getattr(script, "filename", script) or ""
        attributes = getattr(script, "attributes", {}) or {}
        key = (str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    # Late, so that it sees the scripts every other extension adds to the page.
    app.connect("html-page-context", _drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
