"""Evaluation task type chat: prompts rendered with the model's chat template (the server's
rendering), greedy replies scored by exact / contains / regex, accuracy per task."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from capstan_api.evaluation import Task
from capstan_api.tokenizer import DEFAULT_CHAT_TEMPLATE
from capstan_trainer import chat_template
from capstan_trainer.evaluate import tasks

ROWS = [
    {  # chat format: the last assistant turn is the expected answer
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Who keeps the lighthouse?"},
            {"role": "assistant", "content": "Maren"},
        ]
    },
    {"messages": [{"role": "user", "content": "Colour of the quarry?"}], "answer": "grey"},
]


class FakeEngine:
    """Replies fixed text and records the prompts it was given."""

    max_model_len = 256

    def __init__(self, replies: list[str]):
        self.replies, self.prompts = replies, []

    def generate(self, prompts, params):
        self.prompts = prompts
        return [[SimpleNamespace(text=r)] for r in self.replies]


@pytest.fixture
def lm():
    vocab = {"<|begin_of_text|>": 0, "<|end_of_text|>": 1, "[UNK]": 2}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    return SimpleNamespace(tokenizer=tok, eos_id=1, chat_template=DEFAULT_CHAT_TEMPLATE)


def task(match: str) -> Task:
    return Task(name="facts", type="chat", uri="file:///x.jsonl", match=match)


@pytest.mark.parametrize(
    ("match", "replies", "accuracy"),
    [
        ("exact", [" Maren ", "grey stone"], 0.5),
        ("contains", ["It is Maren.", "grey stone"], 1.0),
        ("regex", ["maren", "Grey"], 0.0),
    ],
)
def test_replies_are_scored_by_the_match_mode(lm, match, replies, accuracy):
    found, preds = tasks.chat(FakeEngine(replies), lm, ROWS, task(match), "spec.tasks[facts]")
    assert found == {"accuracy": accuracy, "examples": 2.0} and preds == replies


def test_prompts_are_the_servers_rendering_without_the_answer(lm):
    engine = FakeEngine(["Maren", "grey"])
    tasks.chat(engine, lm, ROWS, task("exact"), "spec.tasks[facts]")
    want = chat_template.render(
        DEFAULT_CHAT_TEMPLATE,
        ROWS[0]["messages"][:2],
        add_generation_prompt=True,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
    )
    assert "Maren" not in want and want.endswith("<|assistant|>\n")
    assert engine.prompts[0] == lm.tokenizer.encode(want, add_special_tokens=False).ids


def test_a_line_without_an_answer_names_the_example(lm):
    rows = [{"messages": [{"role": "user", "content": "Q?"}]}]
    with pytest.raises(tasks.TaskFileError, match=r"spec.tasks\[facts\]: example 1: needs an `answer`"):
        tasks.chat(FakeEngine(["x"]), lm, rows, task("exact"), "spec.tasks[facts]")
