"""Tasks by status and time: the latest failed and dead tasks are found without scanning them all.

Revision ID: 0002
Revises: 0001
Created: 2026-12-04
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_tasks_status_updated_at", "tasks", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_status_updated_at", table_name="tasks")
