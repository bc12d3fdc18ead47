"""Session audit: Sigma rules over CloudTrail events, per-session flags, HTML reports and the audit-events command.

Public entry points: :func:`load_rules`, :func:`load_rules_from_yaml`, :class:`RuleSet` (``evaluate_records``,
``evaluate_table``, ``findings_table``), :class:`Finding`, :class:`UnsupportedRule`, :class:`CompiledRule`.
"""

from elevation.audit.engine import Finding, RuleSet, load_rules, load_rules_from_yaml, read_events
from elevation.audit.rules import CompiledRule, UnsupportedRule

__all__ = [
    "CompiledRule",
    "Finding",
    "RuleSet",
    "UnsupportedRule",
    "load_rules",
    "load_rules_from_yaml",
    "read_events",
]
