"""The method registry: what each built-in method declares, the generated option table, and that nothing
outside saolctl/methods/ branches on a method's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from saolctl.errors import UserError
from saolctl.methods import get_method, list_methods
from saolctl.methods.docs import options_table
from saolctl.methods.registry import builtin_methods
from saolctl.models import create_model, create_objective, list_options, option_defaults

REPO = Path(__file__).resolve().parents[1]


def test_docs_models_md_holds_the_option_table_of_the_registry() -> None:
    text = (REPO / "docs" / "models.md").read_text()
    assert options_table() in text, "docs/models.md is stale: run python -m saolctl.methods.docs --write docs/models.md"


@pytest.mark.parametrize("name", [m.name for m in builtin_methods()])
def test_each_builtin_method_declares_what_the_rest_of_saolctl_asks_for(name: str) -> None:
    method = get_method(name)
    assert method.paper and method.summary and method.map_kinds
    model = create_model("cifar_resnet20", name, num_classes=3)
    assert model.config.options.keys() == {o.name for o in method.all_options()}
    assert tuple(create_objective(model.config).term_names) == method.term_names()
    for opt in method.all_options():
        opt.validate(opt.default)  # every default passes its own check


def test_options_are_one_namespace_in_method_order() -> None:
    # each method's own options in method order, then CutMix's, then the backbone's (error messages list them)
    names = list_options()
    assert names.index("saol_taps") + 1 == names.index("saol_mid") and names[-2:] == ["last_stride", "small_stem"]
    assert names.index("has_grid_size") < names.index("acol_threshold") < names.index("saol_taps") < names.index(
        "cutmix_prob")
    # a shared option shows its declared default; a method may give it another (the cutmix method: 1.0)
    assert option_defaults()["cutmix_prob"] == 0.5 and option_defaults()["saol_taps"] == (-3, -2, -1)
    builtin = [m.name for m in builtin_methods()]
    assert builtin == list_methods()[:len(builtin)] and builtin[:4] == ["cam", "cutmix", "has", "acol"]
    assert builtin[-2:] == ["abn", "saol"]


def test_an_unknown_method_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match=r"^unknown method 'gradcam'; valid: cam, cutmix, has, acol, spg, adl, abn, "
                                        r"saol$"):
        get_method("gradcam")


def test_no_method_name_is_branched_on_outside_its_own_module() -> None:
    names = {m.name for m in builtin_methods()} | {k.name for m in builtin_methods() for k in m.map_kinds}
    branch = re.compile(r"""(==|!=|\bin)\s*["'](%s)["']|["'](%s)["']\s*(==|!=|\bin\b)""" % ("|".join(names), "|".join(names)))
    found = []
    for path in (REPO / "saolctl").rglob("*.py"):
        if "methods" in path.relative_to(REPO / "saolctl").parts[:1]:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if branch.search(line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == []
