"""Which model a Deployment serves, as a pure choice over the objects it names."""

from __future__ import annotations

from capstan_api.deployment import DeploymentSpec
from capstan_operator.deployment import resolve

FOLLOW = DeploymentSpec.model_validate(
    {"model": {"trainingRunRef": {"name": "run"}, "followPassingEvaluations": True}}
)


def evaluation(name: str, step: int, done: str, passed: bool = True, run: str = "run") -> dict:
    """A finished Evaluation of TrainingRun `run`'s checkpoint of `step` (model.step or not: the
    status names the step folder that was evaluated)."""
    return {
        "metadata": {"name": name},
        "spec": {"model": {"trainingRunRef": {"name": run}, "step": step}},
        "status": {
            "phase": "Succeeded",
            "passed": passed,
            "modelUri": f"s3://ckpt/run/step-{step:08d}",
            "completionTime": done,
        },
    }


def served(evaluations: list[dict]) -> tuple[str, str]:
    choice = resolve.choose(FOLLOW, None, None, evaluations)
    return choice.uri, choice.source


def test_a_later_step_that_passes_is_served():
    early = evaluation("early", 4, "2026-01-01T00:00:00Z")
    late = evaluation("late", 10, "2026-01-01T00:05:00Z")
    assert served([early]) == ("s3://ckpt/run/step-00000004", "Evaluation early")
    assert served([early, late]) == ("s3://ckpt/run/step-00000010", "Evaluation late")
    # One that failed its gates, and one of another run, are not candidates.
    worse = evaluation("worse", 12, "2026-01-01T00:09:00Z", passed=False)
    other = evaluation("other", 20, "2026-01-01T00:09:00Z", run="another")
    assert served([early, late, worse, other])[1] == "Evaluation late"


def test_an_older_step_evaluated_again_later_does_not_roll_the_service_back():
    late = evaluation("late", 10, "2026-01-01T00:05:00Z")
    again = evaluation("early-again", 4, "2026-01-02T00:00:00Z")
    assert served([again, late])[1] == "Evaluation late"
    # The same step twice: the later verdict wins.
    recheck = evaluation("late-recheck", 10, "2026-01-03T00:00:00Z")
    assert served([late, again, recheck])[1] == "Evaluation late-recheck"


def test_nothing_passing_yet_is_waited_for():
    choice = resolve.choose(FOLLOW, None, None, [evaluation("e", 4, "", passed=False)])
    assert (choice.uri, choice.waiting) == ("", "waiting for a passing Evaluation of TrainingRun run")
