"""The one-line description, its claims and its confidence (docs/describe.md#description).

Each piece of evidence that passes its threshold becomes a claim with a score in [0, 1]:

- a tuning family: selectivity x drive (the family's share of the unit's best drive over the
  stimuli) x strength (how far the best stimulus drives the unit, relative to its largest
  value on the natural images; 1 without images); claimed when selectivity >= 0.3 (circular
  families) or >= 0.55 (dots, checkerboards) and drive >= 0.5; curves only when arcs drive the
  unit at least as much as gratings (else a curve response is just an edge response);
- top classes: the lift of the most frequent class over its share among all images, claimed
  when at least two top examples share it;
- a concept: 2 x (AUROC - 0.5), claimed at AUROC >= 0.7;
- causal support: 2 x the share of the class logit that ablating the unit removes (capped at 1).

The confidence is the largest claim score (0 when nothing is claimed): how strongly the best
piece of evidence supports the line. Deterministic: no randomness enters.
"""

from __future__ import annotations

from typing import Optional, Sequence

from .records import Claim, Evidence, Tuning

HUE_NAMES = ((15, "red"), (45, "orange"), (75, "yellow"), (105, "yellow-green"), (150, "green"), (195, "cyan"),
             (255, "blue"), (285, "purple"), (335, "magenta"), (360, "red"))
CIRCULAR_MIN, LINEAR_MIN, DRIVE_MIN, CONCEPT_MIN = 0.3, 0.55, 0.5, 0.7


def hue_name(hue: float) -> str:
    h = hue % 360
    return next(name for bound, name in HUE_NAMES if h < bound)


def _tuning_text(t: Tuning) -> str:
    sel = f"(selectivity {t.selectivity:.2f})"
    deg = {"orientation": 180, "hue": 360, "curve": 360}.get(t.family)
    pref = f"{round(t.preferred) % deg}" if deg else f"{t.preferred:g}"
    if t.family == "orientation":
        return f"orientation-selective, {pref}° {sel}"
    if t.family == "hue":
        return f"{hue_name(t.preferred)} colour, hue {pref}° {sel}"
    if t.family == "curve":
        return f"curved edges facing {pref}°, radius {t.secondary:g} px {sel}"
    if t.family == "dots":
        return f"dots, {t.preferred:g} px apart {sel}"
    return f"checkerboards, {t.preferred:g} px squares {sel}"


def tuning_claims(ev: Evidence, strength: float = 1.0) -> list[Claim]:
    from .stimuli import FAMILIES

    out = []
    grating = ev.family("orientation")
    for t in ev.tuning:
        circular = FAMILIES[t.family][2] > 0
        if t.selectivity < (CIRCULAR_MIN if circular else LINEAR_MIN) or t.drive < DRIVE_MIN:
            continue
        if t.family == "curve" and grating is not None and t.drive < grating.drive:
            continue
        score = t.selectivity * t.drive * strength
        out.append(Claim(_tuning_text(t), "tuning", t.family, score,
                         f"{t.family}: selectivity {t.selectivity:.2f} x drive {t.drive:.2f} x strength "
                         f"{strength:.2f}"))
    return sorted(out, key=lambda c: (-c.score, c.key))[:2]


def describe(ev: Evidence, strength: float = 1.0) -> tuple[str, float, list[Claim]]:
    """(line, confidence, claims) from the evidence."""
    claims = tuning_claims(ev, strength)
    named = [c for c in ev.top_classes if c.count > 0]
    if named and named[0].lift > 0 and named[0].count >= 2:  # one image is an anecdote, not a class
        labels = [c.label for c in named if c.count >= max(1, named[0].count // 2)][:3]
        claims.append(Claim("top classes: " + ", ".join(labels), "classes", "|".join(labels), named[0].lift,
                            f"top classes: {named[0].label} in {named[0].count}/{ev.top_k} top examples, "
                            f"lift {named[0].lift:.2f}"))
    for c in sorted(ev.concepts, key=lambda c: (-c.auroc, c.name)):
        if c.auroc >= CONCEPT_MIN:
            claims.append(Claim(f"concept {c.name} (AUROC {c.auroc:.2f})", "concept", c.name, 2 * (c.auroc - 0.5),
                                f"concept {c.name}: AUROC {c.auroc:.2f} ({c.positives} vs {c.negatives} images)"))
    support = [c for c in ev.causal if c.effect < 0 and c.fraction > 0]
    if support:
        top = support[:2]
        claims.append(Claim("supports " + ", ".join(f"{c.label} ({-100 * c.fraction:.0f}% logit)" for c in top),
                            "causal", "|".join(c.label for c in top), min(1.0, 2 * top[0].fraction),
                            f"ablation: {top[0].label} logit {top[0].effect:+.3g} ({100 * top[0].fraction:.1f}%) "
                            f"over {top[0].images} image(s)"))
    if not claims:
        return "no clear selectivity (weak or mixed responses)", 0.0, []
    confidence = max(c.score for c in claims)
    return "; ".join(c.text for c in claims), float(min(1.0, max(0.0, confidence))), claims


def strength_from(best_response: float, blank: float, natural: Optional[Sequence[float]]) -> float:
    """How far the best stimulus drives the unit relative to its largest natural value."""
    if natural is None or len(natural) == 0:
        return 1.0
    top = float(max(natural))
    if top <= blank:
        return 1.0
    return float(min(1.0, max(0.0, (best_response - blank) / (top - blank))))
