"""Send a welcome email on sign-up: kafka-tasks in a Flask app of your own.

    flask --app examples/welcome/app.py kafka-tasks release   # the topics and the status tables
    flask --app examples/welcome/app.py kafka-tasks worker    # the workers
    flask --app examples/welcome/app.py run                   # the web app

Configure Kafka with FLASK_KAFKA_TASKS_URL (or _BOOTSTRAP_SERVERS, _PREFIX, ...), or KAFKA_URL.
"""

from pathlib import Path

from flask import Flask, current_app, request

from broker.flask import KafkaTasks

tasks = KafkaTasks()


@tasks.actor(queue_name="welcome-emails", max_retries=3)
def send_welcome(email: str) -> str:
    """Sends the welcome email; here, writes it to the app's outbox folder."""
    message = Path(current_app.config["OUTBOX"]) / f"{email}.txt"
    message.parent.mkdir(parents=True, exist_ok=True)
    message.write_text(f"From: {current_app.config['MAIL_FROM']}\nTo: {email}\n\nWelcome aboard!\n")
    return str(message)


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(MAIL_FROM="hello@example.com", OUTBOX="var/outbox")
    app.config.from_prefixed_env()
    tasks.init_app(app)
    app.register_blueprint(tasks.status_blueprint(), url_prefix="/tasks")

    @app.post("/signup")
    def signup():
        return tasks.enqueue(send_welcome, request.get_json()["email"])  # 202 once Kafka has it, or 503

    return app
