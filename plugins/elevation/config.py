"""The configuration file: one YAML document whose path is in the environment variable ELEVATION_CONFIG.

Sections: `connections` (Airflow connection ids), `policy` (who may request what, approvers, limits, standing
assignments; see policy.py), `extract`, `audit`, `reconcile` and `notifications` (Slack; see notify/settings.py).
Every section is validated at load; a broken file raises
:class:`ConfigError` naming the file, the field and the problem.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from elevation.access.policy import Policy
from elevation.access.settings import ReconcileSettings
from elevation.audit.settings import AuditSettings
from elevation.extract.settings import ExtractSettings
from elevation.notify.settings import NotifySettings

ENV_VAR = "ELEVATION_CONFIG"


class ConfigError(ValueError):
    """The configuration file is missing or broken; the message names the file, the field and the problem."""


class Connections(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    aws: str = "aws_default"  # Identity Center, Identity Store, Organizations
    database: str = "elevation_db"  # the queue database (conn type sqlite or postgres)


class ElevationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    connections: Connections = Connections()
    policy: Policy = Policy()
    extract: ExtractSettings = ExtractSettings()
    audit: AuditSettings = AuditSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    notifications: NotifySettings = NotifySettings()


def config_path() -> Path:
    value = os.environ.get(ENV_VAR)
    if not value:
        raise ConfigError(
            f"set {ENV_VAR} to the path of the configuration file (see README, 'Configuration')"
        )
    return Path(value)


def load_config(path: str | Path | None = None) -> ElevationConfig:
    path = Path(path) if path is not None else config_path()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration file: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        return ElevationConfig.model_validate(document)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(path, error)) from error


def describe_validation_error(path: Path, error: ValidationError) -> str:
    """One line per problem: `file: section.field.path: message`."""
    problems = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        problems.append(f"{path}: {location}: {problem['msg']}")
    return "invalid configuration\n" + "\n".join(problems)
