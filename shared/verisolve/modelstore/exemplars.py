"""The few-shot exemplars of the default generator's prompt, written for verisolve.

They follow GSM8K's solution format: one step a line, each computation annotated as
`<<expr=result>>` for the calculator, and a last line `#### N`. The problems are our own (never
copy benchmark text here); tests check every annotation with verisolve.calculator.
"""

from __future__ import annotations

from typing import Final

from verisolve.modelstore.manifest import PromptSpec

EXEMPLARS: Final[tuple[dict[str, str], ...]] = (
    {
        "question": (
            "A bakery bakes 48 muffins in the morning and 36 muffins in the afternoon. "
            "It packs all of them into boxes of 6. How many boxes does it fill?"
        ),
        "solution": (
            "The bakery bakes 48+36 = <<48+36=84>>84 muffins.\n"
            "It fills 84/6 = <<84/6=14>>14 boxes.\n"
            "#### 14"
        ),
    },
    {
        "question": (
            "Liam earns $12 an hour at the library. Last week he worked 5 hours on Monday and "
            "7 hours on Thursday, and then he spent $35 on a jacket. How many dollars of last "
            "week's pay does he have left?"
        ),
        "solution": (
            "Liam worked 5+7 = <<5+7=12>>12 hours.\n"
            "He earned 12*12 = <<12*12=144>>144 dollars.\n"
            "After buying the jacket he has 144-35 = <<144-35=109>>109 dollars left.\n"
            "#### 109"
        ),
    },
    {
        "question": (
            "A bicycle costs $240. During a sale its price is cut by 25 percent. Nora buys the "
            "bicycle in the sale and a helmet for $18. How much does she pay in total?"
        ),
        "solution": (
            "The price is cut by 240*25/100 = <<240*25/100=60>>60 dollars.\n"
            "The bicycle costs 240-60 = <<240-60=180>>180 dollars in the sale.\n"
            "Nora pays 180+18 = <<180+18=198>>198 dollars in total.\n"
            "#### 198"
        ),
    },
    {
        "question": (
            "Maya reads 25 pages on every weekday and 40 pages on each day of the weekend. "
            "How many pages does she read in two weeks?"
        ),
        "solution": (
            "On the five weekdays she reads 5*25 = <<5*25=125>>125 pages.\n"
            "On the weekend she reads 2*40 = <<2*40=80>>80 pages.\n"
            "In one week she reads 125+80 = <<125+80=205>>205 pages.\n"
            "In two weeks she reads 2*205 = <<2*205=410>>410 pages.\n"
            "#### 410"
        ),
    },
)

# A new question always follows a blank line, so these end a candidate that starts another one.
STOP_STRINGS: Final[tuple[str, ...]] = ("\n\nQuestion:", "Question:")


def default_prompt() -> PromptSpec:
    """Plain-text few-shot in GSM8K format: 'Question: ...' then 'Answer: ...'."""
    return PromptSpec(exemplars=[dict(e) for e in EXEMPLARS])
