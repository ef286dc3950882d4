"""Each script once per page.

sphinx-thebe registers its configuration script (`const THEBE_JS_URL = ...`) both from the saved
environment and from the read phase, once with no file name and once with an empty one; a page that
declares the same `const` twice stops with a SyntaxError in the browser (tests/test_book.py opens
every page in Chromium and fails on console errors)."""


def _single(app, pagename, templatename, context, doctree) -> None:
    seen, kept = set(), []
    for script in context.get("script_files", []):
        attributes = tuple(sorted(getattr(script, "attributes", {}).items()))
        key = (getattr(script, "filename", script) or "", attributes)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _single)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
