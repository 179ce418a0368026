"""Actors declared before their broker exists, bound to it when it is built.

Dramatiq binds an actor to a broker when ``@dramatiq.actor`` runs, at import: a module of actors
then needs its broker built, and so its configuration read, by whoever imports it first.  An
:class:`Actors` set lets a module declare its actors on import with no broker at all, and an
application's factory bind them once it has built one (``actors.bind(broker)``), the way Flask
extensions let blueprints exist before their app.  A :class:`LazyActor` behaves as the
``dramatiq.Actor`` it is bound to (``send``, ``message``, ``send_with_options``, ...), and calling
it runs its function, as calling an actor does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import dramatiq


class ActorNotBound(RuntimeError):
    """A lazy actor was used to send before any broker was bound to it."""


class LazyActor:
    """An actor that takes its broker later.

    Parameters:
      fn(callable): The actor's function.
      actor_class(type): The class of the bound actor (``dramatiq.Actor``).
      actor_name(str): Its name; the function's name by default.
      queue_name(str): Its queue.
      priority(int): Its priority.
      options(dict): Its options, checked by the broker's middleware when bound.
    """

    def __init__(
        self,
        fn: Callable,
        *,
        actor_class=dramatiq.Actor,
        actor_name: str | None = None,
        queue_name: str = "default",
        priority: int = 0,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.fn = fn
        self.actor_class = actor_class
        self.actor_name = actor_name or fn.__name__
        self.queue_name = queue_name
        self.priority = priority
        self.declared_options = dict(options or {})
        self._bound: dramatiq.Actor | None = None
        functools.update_wrapper(self, fn)

    def bind(self, broker: dramatiq.Broker, **options) -> dramatiq.Actor:
        """Declares this actor on ``broker`` (once per broker) and sends through it from now on.

        Parameters:
          options: Options that win over the declared ones (values only known once the
            application's configuration is read, such as a backoff).

        Raises:
          ValueError: If an option is unknown to the broker's middleware, or the queue name is invalid.
        """
        existing = broker.actors.get(self.actor_name)
        if existing is not None and existing.fn is self.fn:
            existing.options.update(options)
            self._bound = existing
        else:
            self._bound = dramatiq.actor(
                self.fn,
                broker=broker,
                actor_class=self.actor_class,
                actor_name=self.actor_name,
                queue_name=self.queue_name,
                priority=self.priority,
                **{**self.declared_options, **options},
            )
        return self._bound

    @property
    def bound(self) -> dramatiq.Actor:
        """The actor this one was last bound to.

        Raises:
          ActorNotBound: If it was never bound.
        """
        if self._bound is None:
            raise ActorNotBound(
                f"actor {self.actor_name!r} has no broker yet: build the application's broker "
                "(which binds its actors) before sending"
            )
        return self._bound

    def __getattr__(self, name: str):
        # Only reached for what this object lacks: send, message, broker, options, ...
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.bound, name)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"LazyActor({self.actor_name!r}, queue_name={self.queue_name!r})"


class Actors:
    """A set of actors declared before their broker, bound together to one."""

    def __init__(self) -> None:
        self._actors: dict[str, LazyActor] = {}

    def actor(
        self,
        fn: Callable | None = None,
        *,
        actor_class=dramatiq.Actor,
        actor_name: str | None = None,
        queue_name: str = "default",
        priority: int = 0,
        **options,
    ):
        """Declares an actor, as ``@dramatiq.actor`` does but with no broker yet.

        Returns:
          LazyActor: The actor (or a decorator that makes one).

        Raises:
          ValueError: If this set already has an actor of that name.
        """

        def declare(fn: Callable) -> LazyActor:
            lazy = LazyActor(
                fn,
                actor_class=actor_class,
                actor_name=actor_name,
                queue_name=queue_name,
                priority=priority,
                options=options,
            )
            if lazy.actor_name in self._actors:
                raise ValueError(f"an actor named {lazy.actor_name!r} is already declared")
            self._actors[lazy.actor_name] = lazy
            return lazy

        return declare if fn is None else declare(fn)

    def bind(self, broker: dramatiq.Broker, *, options: dict[str, dict] | None = None) -> dramatiq.Broker:
        """Declares every actor of the set on ``broker``; returns the broker.

        Parameters:
          options: Per actor name, options that win over the declared ones.

        Raises:
          ValueError: If ``options`` names an actor this set lacks, or an option is unknown.
        """
        unknown = sorted(set(options or {}) - set(self._actors))
        if unknown:
            raise ValueError(f"no actor named {', '.join(map(repr, unknown))} is declared")
        for name, lazy in self._actors.items():
            lazy.bind(broker, **(options or {}).get(name, {}))
        return broker

    def __iter__(self):
        return iter(self._actors.values())

    def __len__(self) -> int:
        return len(self._actors)
