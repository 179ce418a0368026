"""The reference system's schema history, as Alembic migrations (``versions/``).

:meth:`tasks.store.Store.migrate` runs them on its own connection; there is no ``alembic.ini``:
:func:`config` is the whole configuration.  To add one: a file in ``versions/`` whose
``down_revision`` is the current head, and a line in ``CHANGELOG.md``.
"""

from __future__ import annotations

import functools

#: Where the migrations are, as Alembic names a package's folder.
SCRIPT_LOCATION = "tasks:migrations"

#: The first revision: the schema as it was when migrations began.
FIRST = "0001"


def config(connection=None):
    """Alembic's configuration, running on ``connection`` (see ``env.py``)."""
    # Imported here: importing Alembic logs the set-up of its plugins, which a worker never needs.
    from alembic.config import Config

    result = Config()
    result.set_main_option("script_location", SCRIPT_LOCATION)
    result.attributes["connection"] = connection
    return result


@functools.cache
def _scripts():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config())


def head() -> str:
    """The code's schema revision: the last migration."""
    return _scripts().get_current_head()


def between(start: str | None, end: str) -> list[str]:
    """The revisions after ``start`` (``None``: from the beginning) up to ``end``, oldest first."""
    revisions = [script.revision for script in _scripts().iterate_revisions(end, start)]
    return list(reversed(revisions))
