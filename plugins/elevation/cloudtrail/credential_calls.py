"""The calls that mint credentials: one table for the extract (what it follows, what it only notes) and the audit
(the report's "Credentials minted" section)."""

from __future__ import annotations

#: (eventSource, eventName) of the calls that create a credential, and what kind of credential, as reports say it.
CREDENTIAL_CALLS: dict[tuple[str, str], str] = {
    ("iam.amazonaws.com", "CreateAccessKey"): "access key",
    ("iam.amazonaws.com", "CreateLoginProfile"): "console password",
    ("iam.amazonaws.com", "UpdateLoginProfile"): "console password",
    ("iam.amazonaws.com", "CreateServiceSpecificCredential"): "service-specific credential",
    ("iam.amazonaws.com", "UploadSSHPublicKey"): "SSH public key",
    ("sts.amazonaws.com", "AssumeRole"): "assumed role",
    ("sts.amazonaws.com", "AssumeRoleWithWebIdentity"): "assumed role",
    ("sts.amazonaws.com", "AssumeRoleWithSAML"): "assumed role",
    ("sts.amazonaws.com", "AssumeRoot"): "assumed role",
    ("sts.amazonaws.com", "GetFederationToken"): "federation token",
    ("sts.amazonaws.com", "GetSessionToken"): "session token",
}
#: Calls whose credentials the extract follows: what they do is the session's own work (SessionMatcher.derived).
FOLLOWED_CALLS: frozenset[tuple[str, str]] = frozenset({("sts.amazonaws.com", "AssumeRole")})
#: Kinds whose later use CloudTrail shows under an access key id or an assumed identity's ARN (the others are a
#: password or a key for another service: the report lists them, with no use to trace).
TRACEABLE_KINDS: frozenset[str] = frozenset({"access key", "assumed role", "federation token", "session token"})
