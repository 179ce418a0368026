"""A multi-tenant Kafka plan, simulated: one client may use only the topics and groups of its prefix.

Heroku's multi-tenant Kafka plans give an app's certificate access to the topics and consumer groups
that start with its ``KAFKA_PREFIX``, and to nothing else; they do not let it create topics (the
platform's CLI does).  ``kafka-tasks kafka --tenant-prefix P --tenant-principal DN`` runs the local
broker that way: Kafka's ``StandardAuthorizer``, no access without an ACL, the broker's own
plaintext listener a super user (it stays the admin's way in), and ACLs that give the client's
certificate principal read, write and describe on prefixed topics and groups, and no create.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

#: What the tenant may do with its own topics, and with its own consumer groups: all but create.
TOPIC_OPERATIONS = (AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE, AclOperation.DESCRIBE_CONFIGS)
GROUP_OPERATIONS = (AclOperation.READ, AclOperation.DESCRIBE)


@dataclass(frozen=True)
class Tenant:
    """The one client of a simulated multi-tenant plan.

    Parameters:
      prefix(str): Its ``KAFKA_PREFIX``: the topics and groups it may use start with it.
      principal(str): Its certificate's subject, as Kafka names it (``CN=kafka-tasks client``).
    """

    prefix: str
    principal: str

    def broker_properties(self) -> dict[str, str]:
        """The broker settings that turn authorization on."""
        return {
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            # The plaintext listener (the admin's, the controller's and the broker's own) is ANONYMOUS.
            "super.users": "User:ANONYMOUS",
        }

    def acl_bindings(self) -> list[AclBinding]:
        """The ACLs of the tenant: its prefix's topics and groups, and no create."""
        principal = f"User:{self.principal}"

        def allow(kind: ResourceType, operation: AclOperation) -> AclBinding:
            return AclBinding(
                kind, self.prefix, ResourcePatternType.PREFIXED, principal, "*", operation, AclPermissionType.ALLOW
            )

        return [allow(ResourceType.TOPIC, op) for op in TOPIC_OPERATIONS] + [
            allow(ResourceType.GROUP, op) for op in GROUP_OPERATIONS
        ]

    def grant(self, admin: AdminClient, timeout: float = 30) -> None:
        """Creates the tenant's ACLs, through an admin client of a super user.

        Raises:
          KafkaException: If the broker refuses them.
        """
        for future in admin.create_acls(self.acl_bindings(), request_timeout=timeout).values():
            future.result(timeout)
