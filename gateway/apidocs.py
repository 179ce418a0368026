"""``/api/docs``: Swagger UI, served from an installed package, never a CDN.

flask-smorest's page loads ``swagger-ui-bundle.js``, ``swagger-ui-standalone-preset.js`` and
``swagger-ui.css`` from ``OPENAPI_SWAGGER_UI_URL``.  ``flask-swagger-ui`` (pinned in the lock file)
ships Swagger UI's own ``dist`` folder, versioned as Swagger UI is; this blueprint serves it under
``/api/docs/assets/``, so the page works without the internet.
"""

from __future__ import annotations

from importlib.resources import files

from flask import Blueprint, send_from_directory

#: Where the page finds the assets: the base URL flask-smorest joins their names to.
ASSETS_URL = "/api/docs/assets/"

blp = Blueprint("apidocs", __name__)


@blp.get(ASSETS_URL + "<path:filename>")
def asset(filename: str):
    """Serves one file of Swagger UI's ``dist`` folder (404 for anything else)."""
    return send_from_directory(files("flask_swagger_ui") / "dist", filename, max_age=86_400)
