"""Numbers for the results page's inline-SVG bar charts (drawn by dashboard/_charts.html)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from vrlms_edge.domain.results import Analytics

# A chart shows at most this many bars (a class is ~30; gaze targets can be many).
MAX_BARS: Final = 40


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float
    text: str


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    bars: list[Bar]
    max_value: float


def _chart(title: str, bars: list[Bar]) -> Chart:
    bars = bars[:MAX_BARS]
    return Chart(title=title, bars=bars, max_value=max((b.value for b in bars), default=0) or 1)


def _minutes(ms: int) -> str:
    return f"{ms / 60000:.1f} min"


def charts_of(analytics: Analytics) -> list[Chart]:
    progress = [
        Bar(
            s.display_name,
            max((lesson.progress for lesson in s.lessons), default=0.0) * 100,
            f"{round(max((lesson.progress for lesson in s.lessons), default=0.0) * 100)} %",
        )
        for s in analytics.students
    ]
    time_spent = [
        Bar(s.display_name, total, _minutes(int(total)))
        for s in analytics.students
        for total in [float(sum(lesson.time_spent_ms for lesson in s.lessons))]
    ]
    gaze = [
        Bar(target, count, str(count))
        for target, count in sorted(analytics.gaze.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return [
        _chart("Progress per student", progress),
        _chart("Time on lesson", time_spent),
        _chart("Where students looked (gaze events per target)", gaze),
    ]
