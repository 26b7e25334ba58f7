"""The model-family registry. Every family implements the protocol in ``medgen.models.base``
and declares a pydantic schema for its parameters, so configs fail early with the bad key named."""
from __future__ import annotations

import difflib
import importlib
from typing import Any

from pydantic import BaseModel, ValidationError

from medgen.errors import UserError

# family name -> "module:Class" (imported lazily: torch-heavy modules load only when used)
FAMILIES: dict[str, str] = {}


def register(name: str, target: str) -> None:
    FAMILIES[name] = target


def family_class(name: str):
    if name not in FAMILIES:
        hint = difflib.get_close_matches(name, list(FAMILIES), n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise UserError(f"unknown model family '{name}'{extra}; families: {', '.join(sorted(FAMILIES)) or 'none'}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def validate_params(name: str, params: dict[str, Any]) -> BaseModel:
    cls = family_class(name)
    schema: type[BaseModel] = cls.Params
    try:
        return schema.model_validate(params)
    except ValidationError as err:
        msgs = []
        for e in err.errors():
            key = "model." + ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                hint = difflib.get_close_matches(str(e["loc"][-1]), list(schema.model_fields), n=1)
                msgs.append(f"{key}: unknown key for family '{name}'" + (f" (did you mean 'model.{hint[0]}'?)" if hint else ""))
            else:
                msgs.append(f"{key}: {e['msg']}")
        raise ValueError("; ".join(msgs)) from None
