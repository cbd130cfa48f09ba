"""The rest of a fully local chain: a prompt that mirrors the task, the LLM on the same model object, a label parser."""

from __future__ import annotations

import re
from typing import Any

from langchain_core.example_selectors import BaseExampleSelector
from langchain_core.exceptions import OutputParserException
from langchain_core.output_parsers import BaseOutputParser
from langchain_core.prompts import FewShotPromptTemplate, PromptTemplate

from neuroshot import LanguageModel, NeuroshotError, Task, model_lock

from .selector import NeuronAwareExampleSelector


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def few_shot_prompt(task: Task, example_selector: BaseExampleSelector, *, text_key: str = "text",
                    label_key: str = "label") -> FewShotPromptTemplate:
    """A ``FewShotPromptTemplate`` that formats exactly as ``task.prompt(text, demos)``.

    The instruction is the prefix, ``task.demo_template`` the example prompt, ``task.input_template``
    the suffix, ``task.separator`` the example separator; ``{text}``/``{label}`` become
    ``{text_key}``/``{label_key}``. Works with any example selector.
    """
    if any(task.verbalizers.get(label, label) != label for label in task.labels):
        raise NeuroshotError("few_shot_prompt needs a task without verbalizers (examples show their label as written)")
    example_prompt = PromptTemplate.from_template(
        task.demo_template.replace("{text}", "{" + text_key + "}").replace("{label}", "{" + label_key + "}"))
    prefix = _escape(task.instruction.format(labels=", ".join(task.verbalized))) if task.instruction else ""
    return FewShotPromptTemplate(example_selector=example_selector, example_prompt=example_prompt, prefix=prefix,
                                 suffix=task.input_template.replace("{text}", "{" + text_key + "}"),
                                 input_variables=[text_key], example_separator=task.separator)


def neuroshot_pipeline(source: NeuronAwareExampleSelector | LanguageModel, *, max_new_tokens: int = 16,
                       batch_size: int = 4, **generate_kwargs: Any):
    """A LangChain ``HuggingFacePipeline`` on the very model object of ``source`` (no second copy in memory).

    Greedy decoding by default; the prompt is not repeated in the output. Calls take the same
    lock as the selector's probes, so a chain and a selector never use the model at once.
    """
    import transformers
    from langchain_huggingface import HuggingFacePipeline

    lm = source.model if isinstance(source, NeuronAwareExampleSelector) else source
    if not isinstance(lm, LanguageModel):
        raise NeuroshotError(f"neuroshot_pipeline needs a NeuronAwareExampleSelector or a LanguageModel, "
                             f"got {type(source).__name__}")
    lock = model_lock(lm)

    class _LockedTextGeneration(transformers.TextGenerationPipeline):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with lock:
                return super().__call__(*args, **kwargs)

    settings = {"do_sample": False, **generate_kwargs}
    pipe = transformers.pipeline("text-generation", model=lm.model, tokenizer=lm.tokenizer,
                                 pipeline_class=_LockedTextGeneration, return_full_text=False,
                                 max_new_tokens=max_new_tokens, **settings)
    return HuggingFacePipeline(pipeline=pipe, model_id=lm.name, batch_size=batch_size)


class LabelOutputParser(BaseOutputParser[str]):
    """Map a generated answer to one of the task's labels: the label whose answer text starts the output.

    Case-insensitive; the longest matching answer wins. Without a match it raises
    ``OutputParserException``, or returns ``fallback`` when one is set.
    """

    labels: list[str]
    answers: list[str]  # the answer text of each label (its verbalizer)
    fallback: str | None = None

    @classmethod
    def from_task(cls, task: Task, fallback: str | None = None) -> LabelOutputParser:
        return cls(labels=list(task.labels), answers=task.verbalized, fallback=fallback)

    def parse(self, text: str) -> str:
        head = text.strip().lower()
        for answer, label in sorted(zip(self.answers, self.labels), key=lambda p: -len(p[0])):
            if re.match(re.escape(answer.strip().lower()) + r"(?![a-z0-9])", head):
                return label
        if self.fallback is not None:
            return self.fallback
        raise OutputParserException(f"no label of {self.labels} at the start of the output {text[:80]!r}",
                                    llm_output=text)

    @property
    def _type(self) -> str:
        return "neuroshot_label"
