"""Policy decisions are pure: who may request what, and who may approve it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from elevation.access.policy import Policy, RequestFacts, evaluate_request

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
PROD_OU, ROOT = "ou-prod-1111", "r-root"
POLICY = Policy.model_validate({
    "management_account_id": "000000000000",
    "people": [
        {"login": "ana", "email": "ana@example.com", "identity_center_user": "ana"},
        {"login": "ben", "identity_center_user": "ben"},
        {"login": "cy", "identity_center_user": "cy"},
    ],
    "eligibility": [{"name": "prod", "principals": {"groups": ["sre"]}, "ous": [PROD_OU],
                     "permission_sets": ["Admin"], "max_duration": "4h"}],
    "auto_approval": [{"name": "glass", "principals": {"groups": ["oncall"]}, "ous": [PROD_OU],
                       "permission_sets": ["Admin"], "max_duration": "1h"}],
    "approvers": [{"ous": [PROD_OU], "approvers": ["ben"]}],
})


def facts(**changes) -> RequestFacts:
    values = {"requester": "ana", "account_id": "111122223333", "permission_set": "Admin", "principal_group": None,
              "start_at": NOW, "duration": timedelta(hours=1), "justification": "j", "ticket": None, "approver": None}
    values.update(changes)
    return RequestFacts(**values)


def decide(groups=("sre",), ous=(PROD_OU, ROOT), **changes):
    return evaluate_request(POLICY, facts(**changes), requester_groups=groups, account_ous=ous, now=NOW)


def test_eligibility_follows_the_accounts_ou_and_the_requesters_groups():
    assert decide().ok
    assert not decide(ous=("ou-dev-2222", ROOT)).ok
    assert not decide(groups=("developers",)).ok
    assert not decide(permission_set="ReadOnly").ok


def test_auto_approval_only_within_its_own_limits():
    assert decide(groups=("oncall",)).auto_approval_rule == "glass"
    assert decide(groups=("sre", "oncall"), duration=timedelta(hours=3)).auto_approval_rule is None
    assert decide(groups=("sre",)).auto_approval_rule is None


def test_an_approver_must_be_named_for_the_account_and_not_the_requester():
    assert decide(approver="ben").ok
    assert decide(approver="cy").reason == "cy is not an approver for account 111122223333"
    assert decide(requester="ben", approver="ben").reason == "a requester may not approve their own request"
    allowing = POLICY.model_copy(update={"allow_self_approval": True})
    verdict = evaluate_request(allowing, facts(requester="ben", approver="ben"), requester_groups=["sre"],
                               account_ous=[PROD_OU], now=NOW)
    assert verdict.ok


def test_people_are_found_by_login_or_email_in_any_case():
    assert POLICY.person("ANA@example.com").login == "ana"
    assert POLICY.person(" ana ").login == "ana"
    assert POLICY.person("nobody") is None


def test_a_group_request_must_name_a_group_the_rule_allows():
    assert decide(principal_group="sre").ok
    assert not decide(principal_group="everyone").ok
