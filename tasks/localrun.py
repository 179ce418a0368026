"""``kafka-tasks run`` (``make run``): the whole system on this machine, as a platform would run it.

One environment for every part: the process's own, with ``.env`` read over it the way honcho reads
it (honcho's parser; one ``KEY=value`` a line, ``\\n`` for a newline in a PEM).  That environment
decides whether a local Kafka starts, and on which port (``KAFKA_PORT``); ``release`` runs with it;
and so does every Procfile process, run by honcho's process manager.  So ``DATABASE_URL`` in
``.env`` reaches ``release`` as it reaches the services.

While the services run, the local Kafka is watched: if it dies, one line says so and everything
stops, rather than services that log a broker they cannot reach.  Ctrl-C (or SIGTERM) stops the
services first, giving workers the time they take to finish and leave their consumer groups,
then Kafka.  A worker that did not leave (killed) makes the next start wait for its group's
session timeout (10 s) before its partitions are assigned again.
"""

from __future__ import annotations

import os
import secrets
import sys
import threading
from pathlib import Path

import honcho.manager
from honcho.environ import parse as parse_env
from honcho.manager import Manager
from honcho.printer import Printer

from broker import devkafka

#: The Procfile's processes that ``make run`` runs, after ``release``.
SERVICES = ("web", "auth", "payments", "clock")

#: Where the local Kafka keeps its data across runs (``make clean`` removes it).
KAFKA_DATA = Path("var/kafka")

#: How long stopping services get before they are killed (s): a worker finishes what it runs and
#: leaves its groups within 25 s of SIGTERM (``broker.worker``); honcho's own wait is 5 s.
STOP_GRACE = 30


class RunError(Exception):
    """``kafka-tasks run`` cannot go on.  Its message is one line, meant for a user."""


def read_env(path: Path = Path(".env"), base=None) -> dict[str, str]:
    """Returns the environment every part of the run gets: ``base`` (this process's environment by
    default), with the variables of ``path`` over it, if it exists, as honcho reads them.

    Raises:
      RunError: If the file exists and cannot be read.
    """
    env = dict(os.environ if base is None else base)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return env
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"cannot read {path}: {e}") from None
    env.update(parse_env(text))
    return env


def procfile(root: Path = Path(".")) -> dict[str, str]:
    """The Procfile's process types and command lines, as honcho reads them."""
    from honcho.environ import parse_procfile

    return dict(parse_procfile((root / "Procfile").read_text()).processes)


def wants_local_kafka(env: dict[str, str]) -> bool:
    """Whether the run starts a Kafka of its own: when no cluster is named."""
    return not (env.get("KAFKA_URL", "").strip() or env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip())


def kafka_port(env: dict[str, str]) -> int:
    """The local Kafka's port: ``KAFKA_PORT``, 9092 by default.

    Raises:
      RunError: If it is no port number.
    """
    text = env.get("KAFKA_PORT", "").strip() or "9092"
    if not (text.isascii() and text.isdigit() and 0 < int(text) < 65536):
        raise RunError(f"KAFKA_PORT must be a port number (got {text[:20]!r})")
    return int(text)


def banner(env: dict[str, str]) -> str:
    """What the run prints once the system is up: where to find it."""
    base = f"http://127.0.0.1:{env['PORT']}"
    return "\n".join(
        [
            "",
            f"API:      {base}/api",
            f"API docs: {base}/api/docs",
            f"Ops:      {base}/ops (any user name, password {env['OPS_PASSWORD']})",
            f"Try:      curl -si -X POST {base}/api/auth/sign-up -H 'Content-Type: application/json' "
            """-d '{"name": "Ada", "email": "ada@example.com"}'""",
            "",
        ]
    )


def run(env_file: Path = Path(".env"), services=SERVICES) -> int:
    """Runs a local Kafka (unless a cluster is named), ``release``, then the services, until
    Ctrl-C, SIGTERM, or one of them (or Kafka) exits.

    Returns:
      The exit status: 0 after Ctrl-C or SIGTERM, non-zero if something failed.
    """
    import subprocess

    env = read_env(env_file)
    env.setdefault("PORT", "5000")
    # The dashboard is off without a password: this run makes one up, and prints it.
    env.setdefault("OPS_PASSWORD", secrets.token_urlsafe(12))
    commands = procfile()
    kafka = None
    if wants_local_kafka(env):
        port = kafka_port(env)
        try:
            devkafka.check_port_free(port)
        except devkafka.LocalKafkaError:
            raise RunError(
                f"port {port} on 127.0.0.1 (KAFKA_PORT) is already in use; stop what uses it, set KAFKA_PORT, "
                "or name a running Kafka in KAFKA_BOOTSTRAP_SERVERS"
            ) from None
        kafka = devkafka.LocalKafka(port=port, data_dir=KAFKA_DATA)
    try:
        if kafka is not None:
            kafka.start()
            print(f"Kafka {devkafka.KAFKA_VERSION} is ready at {kafka.bootstrap_servers} (data {kafka.data_dir})")
            env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
        else:
            print(f"Using the Kafka cluster at {env.get('KAFKA_URL') or env['KAFKA_BOOTSTRAP_SERVERS']}.")
        sys.stdout.flush()
        release = subprocess.run(["bash", "-c", commands["release"]], env=env)
        if release.returncode != 0:
            raise RunError(f"release failed (exit status {release.returncode}); see above")
        print(banner(env), flush=True)
        return _serve(env, commands, services, kafka)
    finally:
        if kafka is not None:
            kafka.stop()


def _serve(env: dict[str, str], commands: dict[str, str], services, kafka) -> int:
    honcho.manager.KILL_WAIT = STOP_GRACE  # honcho's wait between SIGTERM and SIGKILL (5 s)
    manager = Manager(Printer(sys.stdout))
    for name in services:
        manager.add_process(name, commands[name], env={**env, "DYNO": f"{name}.1"})
    died: list[str] = []
    served = threading.Event()
    if kafka is not None:
        threading.Thread(target=_watch, args=(kafka, manager, served, died), daemon=True).start()
    try:
        manager.loop()
    finally:
        served.set()
    if died:
        print(died[0], file=sys.stderr, flush=True)  # last, so it is the line a user sees
        return 1
    # honcho's return code: 130 or 143 after Ctrl-C or SIGTERM, else the first process's to exit.
    return 0 if manager.returncode in (130, 143) else (manager.returncode or 1)


def _watch(kafka, manager: Manager, served: threading.Event, died: list[str]) -> None:
    """Stops the services, saying why in one line, if the local Kafka exits under them (its JVM is
    in a session of its own: Ctrl-C does not reach it, and it is stopped after the services)."""
    process = kafka.process
    while not served.wait(0.2):
        if process.poll() is not None:
            died.append(
                f"kafka-tasks run: error: the local Kafka exited (status {process.returncode}); "
                f"see {kafka.log_file}. Stopping the services."
            )
            manager.terminate()
            return


def main() -> int:
    """``kafka-tasks run``: one line on errors, and a non-zero exit."""
    try:
        return run()
    except (RunError, devkafka.LocalKafkaError) as e:
        print(f"kafka-tasks run: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
