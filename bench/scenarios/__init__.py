"""Scenario implementations: each module has an orchestrator ``run`` and a worker body."""
