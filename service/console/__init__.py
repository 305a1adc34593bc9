"""The console: a page for people, `GET /console`.

Plain HTML, CSS and JavaScript in `static/`, served by `ConsoleController`
(`routes.py`). The page calls the public API with the caller's own key, so it
can see and do exactly what any client with that key can.
"""
