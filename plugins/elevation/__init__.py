"""Temporary elevated access for AWS IAM Identity Center: intake, grants, revocations, audit."""

__version__ = "0.1.0"
