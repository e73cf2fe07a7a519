"""Kafka topic names. The version suffix changes with the schema version."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """All topic names, optionally under a prefix so several pipelines (or tests) share a broker."""

    prefix: str = ""

    def _name(self, base: str) -> str:
        return f"{self.prefix}fleetpulse.{base}.v1"

    @property
    def health(self) -> str:
        """Health reports and key enrolments from PC agents (key: device id; see ``contract.auth``)."""
        return self._name("health")

    @property
    def mobile(self) -> str:
        """Health reports of phones and tablets from the MDM bridge (key: device id)."""
        return self._name("mobile")

    @property
    def inventory(self) -> str:
        """Compacted: IT's asset register, latest facts per device (key: device id)."""
        return self._name("inventory")

    @property
    def mobile_inventory(self) -> str:
        """Compacted: the MDM bridge's asset facts of the devices it reports (key: device id).

        The bridge's own topic because Kafka ACLs cannot restrict keys: with write access to the register,
        a leaked bridge certificate could move any PC to another site or change its warranty. Consumers
        join a record from it only for a device of the bridge (``contract.auth.mdm_inventory_refusal``).
        """
        return self._name("mobile.inventory")

    @property
    def scores(self) -> str:
        return self._name("scores")

    @property
    def alerts(self) -> str:
        return self._name("alerts")

    @property
    def labels(self) -> str:
        """Ticket outcomes (confirmed fault / false alarm) that training consumes."""
        return self._name("labels")

    @property
    def features(self) -> str:
        """Feature log for fleet retraining (key: ``FeatureLogRecord.log_key``); the ticket store keeps it."""
        return self._name("features")

    @property
    def control(self) -> str:
        """IT's device actions (re-enrolment); only IT's principal may write it (key: device id)."""
        return self._name("control")

    @property
    def serving(self) -> str:
        """Compacted: the registry index generations workers served (key: ``ServedRegistry.log_key``)."""
        return self._name("serving")

    @property
    def dead_letter(self) -> str:
        return self._name("deadletter")

    def all(self) -> list[str]:
        return [
            self.health,
            self.mobile,
            self.inventory,
            self.mobile_inventory,
            self.scores,
            self.alerts,
            self.labels,
            self.features,
            self.control,
            self.serving,
            self.dead_letter,
        ]
