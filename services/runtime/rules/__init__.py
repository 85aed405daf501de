"""Detection rules: the catalog as data (catalog.py) and the checks that apply it to events
(checks.py). Pure; callers import from here."""

from services.runtime.rules.catalog import BY_ID, RULES, Detection, Rule, Severity
from services.runtime.rules.checks import CHECKS, Check, evaluate

__all__ = ["BY_ID", "CHECKS", "RULES", "Check", "Detection", "Rule", "Severity", "evaluate"]
