#!/usr/bin/env python3
"""Terraform and the code agree on queues, tables and topics.

One source of truth: the code's own description of what it uses, `eventfleet tables describe --json` (queue names,
FIFO flags, the dead-letter redrive, table names, key schemas, global secondary indexes, TTL attributes, topic
names, the metrics namespace). This script parses the root Terraform configuration and the local modules it calls
with python-hcl2, evaluates what it needs (the `name_prefix` variable's default, the module arguments, and how the
modules pass them to the aws_sqs_queue / aws_dynamodb_table / aws_sns_topic resources), and compares field by field.
Any difference, anything missing on either side, or an expression it cannot evaluate fails the run with a message
naming both sides.

    check_names.py [--describe-json FILE] [--root DIR]

Without --describe-json it runs `${EVENTFLEET_BIN:-target/debug/eventfleet} tables describe --json` with every
EVENTFLEET_* variable unset: the code's defaults, which Terraform's variable defaults must match.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import hcl2

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO / "infra" / "terraform" / "live"


# Expressions -------------------------------------------------------------------------------------------------------


class EvalError(Exception):
    """A Terraform expression that failed the way Terraform's try() catches (null attribute, missing key)."""


class Unsupported(Exception):
    """An expression this script does not evaluate: the Terraform changed shape; teach the script or simplify."""


class Missing:
    """A variable without a default and without an argument."""

    def __init__(self, what: str):
        self.what = what

    def __repr__(self) -> str:
        return f"<no value: {self.what}>"


class Lazy:
    """An HCL object whose attributes are evaluated on first use (so unrelated ones may reference module outputs)."""

    def __init__(self, raw: dict[str, Any], scope: "Scope", where: str):
        self.raw = {k: v for k, v in raw.items() if k != "__is_block__"}
        self.scope = scope
        self.where = where
        self.cache: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        if key not in self.raw:
            raise EvalError(f"{self.where} has no attribute {key!r}")
        if key not in self.cache:
            self.cache[key] = evaluate(self.raw[key], self.scope, f"{self.where}.{key}")
        return self.cache[key]

    def keys(self) -> list[str]:
        return list(self.raw)


class Scope:
    """Names visible to an expression: var, local, and block iterators (each, global_secondary_index, ...)."""

    def __init__(self, names: dict[str, Callable[[], Any]]):
        self.names = names

    def child(self, **extra: Any) -> "Scope":
        names = dict(self.names)
        for name, value in extra.items():
            names[name] = (lambda v=value: v)
        return Scope(names)

    def lookup(self, name: str, expr: str) -> Any:
        if name not in self.names:
            raise Unsupported(f"`{expr}`: `{name}` is not something this check can evaluate")
        return self.names[name]()


def unquote(text: str) -> str | None:
    """The content of a python-hcl2 literal string ("\"...\""), or None for an expression."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1]
    return None


def split_top(text: str, sep: str = ",") -> list[str]:
    """Splits on sep outside parentheses, brackets, braces and strings."""
    parts, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def interpolations(template: str) -> list[tuple[int, int, str]]:
    """(start, end, inner) of each ${...} in a template, matching nested braces."""
    found, i = [], 0
    while True:
        i = template.find("${", i)
        if i < 0:
            return found
        if i > 0 and template[i - 1] == "$":  # $${ is a literal ${
            i += 2
            continue
        depth, j = 0, i + 1
        while j < len(template):
            if template[j] == "{":
                depth += 1
            elif template[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        found.append((i, j + 1, template[i + 2 : j]))
        i = j + 1


REF = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]+\])*")
NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def evaluate(value: Any, scope: Scope, where: str) -> Any:
    """Evaluates a python-hcl2 value: literals as they are, strings as templates or expressions."""
    if isinstance(value, dict):
        return Lazy(value, scope, where)
    if isinstance(value, list):
        return [evaluate(v, scope, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    literal = unquote(value)
    if literal is not None:
        spans = interpolations(literal)
        if not spans:
            return literal.replace("$${", "${")
        out, last = [], 0
        for start, end, inner in spans:
            out.append(literal[last:start])
            part = evaluate_expr(inner, scope, where)
            if isinstance(part, (Lazy, list, dict)) or part is None:
                raise Unsupported(f"{where}: `${{{inner}}}` is not a string inside a template")
            out.append(str(part).lower() if isinstance(part, bool) else str(part))
            last = end
        out.append(literal[last:])
        return "".join(out)
    spans = interpolations(value)
    if len(spans) == 1 and spans[0][0] == 0 and spans[0][1] == len(value):
        return evaluate_expr(spans[0][2], scope, where)
    raise Unsupported(f"{where}: cannot read {value!r}")


def evaluate_expr(expr: str, scope: Scope, where: str) -> Any:
    expr = expr.strip()
    if expr == "null":
        return None
    if expr in ("true", "false"):
        return expr == "true"
    if NUMBER.fullmatch(expr):
        return float(expr) if "." in expr else int(expr)
    if unquote(expr) is not None and not interpolations(expr):
        return unquote(expr)
    ternary = split_top(expr, "?")
    if len(ternary) == 2:
        branches = split_top(ternary[1], ":")
        if len(branches) != 2:
            raise Unsupported(f"{where}: cannot evaluate `{expr}`")
        condition = evaluate_expr(ternary[0], scope, where)
        if not isinstance(condition, bool):
            raise Unsupported(f"{where}: the condition of `{expr}` is not a bool")
        return evaluate_expr(branches[0] if condition else branches[1], scope, where)
    for op in ("!=", "=="):
        sides = split_top(expr, op)
        if len(sides) == 2:
            left, right = (evaluate_expr(s, scope, where) for s in sides)
            return (left != right) if op == "!=" else (left == right)
    call = re.fullmatch(r"([a-z_]+)\((.*)\)", expr, re.S)
    if call:
        name, args = call.group(1), split_top(call.group(2))
        if name == "try":
            for arg in args:
                try:
                    return evaluate_expr(arg, scope, where)
                except EvalError:
                    continue
            raise EvalError(f"{where}: no argument of `{expr}` evaluates")
        if name == "tostring" and len(args) == 1:
            v = evaluate_expr(args[0], scope, where)
            return str(v).lower() if isinstance(v, bool) else str(v)
        raise Unsupported(f"{where}: function `{name}(...)` in `{expr}`")
    if expr.startswith("[") and expr.endswith("]"):
        inner = expr[1:-1].strip()
        return [evaluate_expr(item, scope, where) for item in split_top(inner)] if inner else []
    if REF.fullmatch(expr):
        return resolve(expr, scope, where)
    raise Unsupported(f"{where}: cannot evaluate `{expr}`")


def resolve(ref: str, scope: Scope, where: str) -> Any:
    steps = re.findall(r"[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]+\]", ref)
    value = scope.lookup(steps[0], ref)
    for step in steps[1:]:
        if isinstance(value, Missing):
            raise Unsupported(f"{where}: `{ref}` needs {value.what}, which has no default")
        if value is None:
            raise EvalError(f"{where}: `{ref}`: attribute {step!r} of null")
        if step.startswith("["):
            index = int(step[1:-1])
            if not isinstance(value, list) or index >= len(value):
                raise EvalError(f"{where}: `{ref}`: no element {index}")
            value = value[index]
        elif isinstance(value, Lazy):
            value = value.get(step)
        elif isinstance(value, dict):
            if step not in value:
                raise EvalError(f"{where}: `{ref}`: no attribute {step!r}")
            value = value[step]
        else:
            raise EvalError(f"{where}: `{ref}`: {value!r} has no attribute {step!r}")
    if isinstance(value, Missing):
        raise Unsupported(f"{where}: `{ref}` needs {value.what}, which has no default")
    return value


def materialize(value: Any) -> Any:
    if isinstance(value, Lazy):
        return {k: materialize(value.get(k)) for k in value.keys()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


# Terraform configurations -----------------------------------------------------------------------------------------


def label(text: str) -> str:
    return unquote(text) or text


class Config:
    """The .tf files of one directory, merged."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.variables: dict[str, dict] = {}
        self.locals: dict[str, Any] = {}
        self.modules: dict[str, dict] = {}
        self.resources: dict[tuple[str, str], dict] = {}
        files = sorted(glob.glob(str(directory / "*.tf")))
        if not files:
            raise SystemExit(f"check_names: no .tf files in {directory}")
        for file in files:
            with open(file) as f:
                doc = hcl2.load(f)
            for block in doc.get("variable", []):
                for name, body in block.items():
                    self.variables[label(name)] = body
            for block in doc.get("locals", []):
                self.locals.update({k: v for k, v in block.items() if k != "__is_block__"})
            for block in doc.get("module", []):
                for name, body in block.items():
                    self.modules[label(name)] = body
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for name, body in named.items():
                        self.resources[(label(rtype), label(name))] = body

    def scope(self, arguments: dict[str, Any] | None, caller_scope: Scope | None, where: str) -> Scope:
        """var.* from the arguments (a module call) or the defaults; local.* lazily."""
        names: dict[str, Callable[[], Any]] = {}
        var_cache: dict[str, Any] = {}

        def var_value(name: str) -> Any:
            if name not in var_cache:
                if arguments is not None and name in arguments:
                    var_cache[name] = evaluate(arguments[name], caller_scope, f"{where} argument {name}")
                elif "default" in self.variables.get(name, {}):
                    body = self.variables[name]
                    var_cache[name] = evaluate(body["default"], Scope({}), f"variable {name} default")
                elif name in self.variables:
                    var_cache[name] = Missing(f"variable {name!r} of {self.dir.name}")
                else:
                    raise EvalError(f"{where}: no variable {name!r} in {self.dir}")
            return var_cache[name]

        class Vars(Lazy):
            def __init__(self, config: Config):
                self.where = f"{where} var"
                self.raw = {n: None for n in config.variables}

            def get(self, key: str) -> Any:
                return var_value(key)

        vars_obj = Vars(self)
        scope = Scope(names)
        local_obj = Lazy(self.locals, scope, f"{where} local")
        names["var"] = lambda: vars_obj
        names["local"] = lambda: local_obj
        return scope


def module_source(root: Config, call: dict) -> Path | None:
    source = evaluate(call.get("source", '""'), Scope({}), "module source")
    if not isinstance(source, str) or not source.startswith("."):
        return None
    return (root.dir / source).resolve()


# The check --------------------------------------------------------------------------------------------------------


class Report:
    def __init__(self) -> None:
        self.compared = 0
        self.mismatches: list[str] = []

    def same(self, what: str, code: Any, terraform: Any) -> bool:
        self.compared += 1
        if code == terraform:
            print(f"  ok    {what}: {json.dumps(code)}")
            return True
        self.mismatches.append(f"{what}: the code uses {json.dumps(code)}, Terraform has {json.dumps(terraform)}")
        print(f"  DIFF  {what}: code {json.dumps(code)} != Terraform {json.dumps(terraform)}")
        return False

    def fail(self, message: str) -> None:
        self.compared += 1
        self.mismatches.append(message)
        print(f"  DIFF  {message}")


def load_contract(path: str | None) -> dict:
    if path:
        with open(path) as f:
            return json.load(f)
    binary = os.environ.get("EVENTFLEET_BIN", str(REPO / "target" / "debug" / "eventfleet"))
    if not os.access(binary, os.X_OK):
        raise SystemExit(
            f"check_names: {binary} not found: build it (cargo build --bin eventfleet), set EVENTFLEET_BIN, "
            "or pass --describe-json FILE"
        )
    # Every EVENTFLEET_* setting unset: the defaults (prefix, namespace, max receive count, no per-name override),
    # which is what Terraform's variable defaults must match.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTFLEET_")}
    done = subprocess.run([binary, "tables", "describe", "--json"], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"check_names: `{binary} tables describe --json` exited {done.returncode}: {done.stderr.strip()}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as e:
        raise SystemExit(f"check_names: `{binary} tables describe --json` printed no JSON document: {e}")


def module_instances(root: Config, root_scope: Scope, module_dir: str) -> list[tuple[str, Config, Scope]]:
    """Calls of ../modules/<module_dir> in the root: (call name, the module's config, its scope)."""
    out = []
    for name, call in sorted(root.modules.items()):
        source = module_source(root, call)
        if source is None or source.name != module_dir:
            continue
        if "count" in call or "for_each" in call:
            raise Unsupported(f"module.{name} uses count/for_each; this check reads one instance per call")
        config = Config(source)
        args = {k: v for k, v in call.items() if k not in ("source", "__is_block__", "depends_on", "providers")}
        out.append((name, config, config.scope(args, root_scope, f"module.{name}")))
    return out


def resources_of(config: Config, rtype: str, where: str) -> list[tuple[str, dict]]:
    found = [(name, body) for (t, name), body in config.resources.items() if t == rtype]
    for name, body in found:
        if "count" in body or "for_each" in body:
            raise Unsupported(f"{where}: {rtype}.{name} uses count/for_each; this check reads single resources")
    return found


def key_of(expr_raw: Any, scope: Scope, where: str) -> dict | None:
    """A key attribute (`var.hash_key.name`, `try(x.range_key.name, null)`) as {name, type}: the type is read
    from the same key object (`...type`), the convention of the dynamodb_table module."""
    name = evaluate(expr_raw, scope, where)
    if name is None:
        return None
    if not isinstance(expr_raw, str):
        raise Unsupported(f"{where}: a literal key name; expected a reference to a {{name, type}} object")
    inner = interpolations(expr_raw)
    text = inner[0][2].strip() if inner else ""
    m = re.fullmatch(r"(?:try\()?\s*([A-Za-z0-9_.\[\]-]+)\.name\s*(?:,\s*null\s*\))?", text)
    if not m:
        raise Unsupported(f"{where}: `{text}`: expected `<key object>.name` or `try(<key object>.name, null)`")
    key_type = evaluate_expr(f"{m.group(1)}.type", scope, where)
    return {"name": name, "type": key_type}


def dynamic_blocks(body: dict, block: str) -> list[dict]:
    found = []
    for dyn in body.get("dynamic", []):
        for name, content in dyn.items():
            if label(name) == block:
                found.append(content)
    return found


def terraform_tables(root: Config, root_scope: Scope) -> dict[str, dict]:
    tables = {}
    for call, config, scope in module_instances(root, root_scope, "dynamodb_table"):
        for rname, body in resources_of(config, "aws_dynamodb_table", f"module.{call}"):
            where = f"module.{call}.aws_dynamodb_table.{rname}"
            name = evaluate(body["name"], scope, f"{where}.name")
            ttl_blocks = [(block, scope) for block in body.get("ttl", [])]
            for dyn in dynamic_blocks(body, "ttl"):
                iterator = label(dyn.get("iterator", '"ttl"'))
                for item in evaluate(dyn["for_each"], scope, f"{where}.dynamic.ttl.for_each"):
                    ttl_blocks.append((dyn["content"][0], scope.child(**{iterator: {"value": item}})))
            if len(ttl_blocks) > 1:
                raise Unsupported(f"{where}: more than one ttl block")
            ttl = None
            for block, s in ttl_blocks:
                enabled = evaluate(block.get("enabled", False), s, f"{where}.ttl.enabled")
                attribute = evaluate(block.get("attribute_name"), s, f"{where}.ttl.attribute_name")
                ttl = attribute if enabled else None
                if enabled and not attribute:
                    raise Unsupported(f"{where}: TTL enabled without an attribute name")
            indexes = []
            for block in body.get("global_secondary_index", []):
                indexes.append((block, scope))
            for dyn in dynamic_blocks(body, "global_secondary_index"):
                iterator = label(dyn.get("iterator", '"global_secondary_index"'))
                items = evaluate(dyn["for_each"], scope, f"{where}.dynamic.for_each")
                if isinstance(items, Lazy):
                    items = [items.get(k) for k in items.keys()]
                content = dyn["content"][0]
                for item in items:
                    indexes.append((content, scope.child(**{iterator: {"value": item}})))
            gsis = []
            for block, s in indexes:
                gsis.append(
                    {
                        "name": evaluate(block["name"], s, f"{where}.global_secondary_index.name"),
                        "hash_key": key_of(block["hash_key"], s, f"{where}.global_secondary_index.hash_key"),
                        "range_key": key_of(block.get("range_key"), s, f"{where}.global_secondary_index.range_key"),
                        "projection": evaluate(block["projection_type"], s, f"{where}.global_secondary_index.projection_type"),
                    }
                )
            tables[name] = {
                "where": where,
                "hash_key": key_of(body["hash_key"], scope, f"{where}.hash_key"),
                "range_key": key_of(body.get("range_key"), scope, f"{where}.range_key"),
                "ttl_attribute": ttl,
                "global_secondary_indexes": sorted(gsis, key=lambda g: g["name"]),
            }
    return tables


def terraform_queues(root: Config, root_scope: Scope) -> dict[str, dict]:
    queues = {}
    for call, config, scope in module_instances(root, root_scope, "queue"):
        local_names = {}
        bodies = dict(resources_of(config, "aws_sqs_queue", f"module.{call}"))
        for rname, body in bodies.items():
            local_names[rname] = evaluate(body["name"], scope, f"module.{call}.aws_sqs_queue.{rname}.name")
        for rname, body in bodies.items():
            where = f"module.{call}.aws_sqs_queue.{rname}"
            dead_letter = None
            if "redrive_policy" in body:
                text = body["redrive_policy"]
                target = re.search(r"deadLetterTargetArn\"?\s*[=:]\s*aws_sqs_queue\.([A-Za-z0-9_-]+)\.arn", text)
                count = re.search(r"maxReceiveCount\"?\s*[=:]\s*([^,}\s]+)", text)
                if not target or not count:
                    raise Unsupported(f"{where}.redrive_policy: expected jsonencode({{deadLetterTargetArn = aws_sqs_queue.<name>.arn, maxReceiveCount = ...}}), found {text!r}")
                if target.group(1) not in local_names:
                    raise Unsupported(f"{where}.redrive_policy: dead-letter target aws_sqs_queue.{target.group(1)} is not in the module")
                dead_letter = {
                    "name": local_names[target.group(1)],
                    "max_receive_count": evaluate_expr(count.group(1), scope, f"{where}.redrive_policy.maxReceiveCount"),
                }
            queues[local_names[rname]] = {
                "where": where,
                "fifo": evaluate(body.get("fifo_queue", False), scope, f"{where}.fifo_queue"),
                "content_based_deduplication": evaluate(
                    body.get("content_based_deduplication", False), scope, f"{where}.content_based_deduplication"
                ),
                "dead_letter": dead_letter,
            }
    return queues


def terraform_topics(root: Config, root_scope: Scope) -> dict[str, str]:
    topics = {}
    for call, config, scope in module_instances(root, root_scope, "topic"):
        for rname, body in resources_of(config, "aws_sns_topic", f"module.{call}"):
            where = f"module.{call}.aws_sns_topic.{rname}"
            topics[evaluate(body["name"], scope, f"{where}.name")] = where
    return topics


def check(contract: dict, root_dir: Path) -> Report:
    report = Report()
    root = Config(root_dir)
    scope = root.scope(None, None, "root")
    var = lambda name: resolve(f"var.{name}", scope, "root")  # noqa: E731

    print(f"Terraform root {root_dir.relative_to(REPO) if root_dir.is_relative_to(REPO) else root_dir}")
    print("prefix and namespace")
    report.same("name prefix (variable name_prefix default)", contract["prefix"], var("name_prefix"))
    report.same("metrics namespace (variable metrics_namespace default)", contract["metrics_namespace"], var("metrics_namespace"))

    print("queues")
    tf_queues = terraform_queues(root, scope)
    by_role = {q["role"]: q for q in contract["queues"]}
    for queue in contract["queues"]:
        name, role = queue["name"], queue["role"]
        tf = tf_queues.get(name)
        if tf is None:
            report.fail(f"queue {role}: the code uses {name}; Terraform has no queue of that name (it has {sorted(tf_queues)})")
            continue
        report.same(f"queue {role} {name} fifo", queue["fifo"], tf["fifo"])
        report.same(f"queue {role} {name} content_based_deduplication", queue["content_based_deduplication"], tf["content_based_deduplication"])
        code_dl = queue.get("dead_letter")
        if code_dl is None:
            report.same(f"queue {role} {name} dead-letter target", None, tf["dead_letter"] and tf["dead_letter"]["name"])
            continue
        if code_dl["role"] not in by_role:
            report.fail(f"queue {role}: the code's dead-letter role {code_dl['role']!r} names no queue")
            continue
        expected = {"name": by_role[code_dl["role"]]["name"], "max_receive_count": code_dl["max_receive_count"]}
        report.same(f"queue {role} {name} dead-letter target and maxReceiveCount", expected, tf["dead_letter"])
    for name in sorted(set(tf_queues) - {q["name"] for q in contract["queues"]}):
        report.fail(f"queue {name} ({tf_queues[name]['where']}) is in Terraform but not used by the code")

    print("tables")
    tf_tables = terraform_tables(root, scope)
    for table in contract["tables"]:
        name, role = table["name"], table["role"]
        tf = tf_tables.get(name)
        if tf is None:
            report.fail(f"table {role}: the code uses {name}; Terraform has no table of that name (it has {sorted(tf_tables)})")
            continue
        report.same(f"table {role} {name} hash key", table["hash_key"], tf["hash_key"])
        report.same(f"table {role} {name} range key", table["range_key"], tf["range_key"])
        report.same(f"table {role} {name} TTL attribute", table["ttl_attribute"], tf["ttl_attribute"])
        code_gsis = sorted(
            (
                {
                    "name": g["name"],
                    "hash_key": g["hash_key"],
                    "range_key": g.get("range_key"),
                    "projection": g["projection"],
                }
                for g in table.get("global_secondary_indexes", [])
            ),
            key=lambda g: g["name"],
        )
        report.same(f"table {role} {name} global secondary indexes", code_gsis, materialize(tf["global_secondary_indexes"]))
    for name in sorted(set(tf_tables) - {t["name"] for t in contract["tables"]}):
        report.fail(f"table {name} ({tf_tables[name]['where']}) is in Terraform but not used by the code")

    print("topics")
    tf_topics = terraform_topics(root, scope)
    for topic in contract["topics"]:
        report.same(f"topic {topic['role']}", topic["name"], topic["name"] if topic["name"] in tf_topics else None)
    for name in sorted(set(tf_topics) - {t["name"] for t in contract["topics"]}):
        print(f"  note  topic {name} ({tf_topics[name]}) is Terraform's own (not used by the code's describe)")

    print("process environment (locals.common_environment, given to both services)")
    env = resolve("local.common_environment", scope, "root")
    max_receive = by_role.get("events", {}).get("dead_letter") or {}
    report.same("EVENTFLEET_NAME_PREFIX", contract["prefix"], env.get("EVENTFLEET_NAME_PREFIX"))
    report.same("EVENTFLEET_CLOUDWATCH_NAMESPACE", contract["metrics_namespace"], env.get("EVENTFLEET_CLOUDWATCH_NAMESPACE"))
    if "max_receive_count" in max_receive:
        report.same("EVENTFLEET_MAX_RECEIVE_COUNT", str(max_receive["max_receive_count"]), env.get("EVENTFLEET_MAX_RECEIVE_COUNT"))
    # Per-name overrides the code honours; set, they must name the same tables.
    tables_by_role = {t["role"]: t["name"] for t in contract["tables"]}
    for var_name, role in (
        ("EVENTFLEET_IDEMPOTENCY_TABLE", "idempotency"),
        ("EVENTFLEET_AUDIT_TABLE", "audit"),
        ("EVENTFLEET_RETRIES_TABLE", "retries"),
        ("EVENTFLEET_WEBHOOKS_TABLE", "webhooks"),
        ("EVENTFLEET_ALARM_THREADS_TABLE", "alarm_threads"),
    ):
        if var_name in env.keys():
            report.same(var_name, tables_by_role.get(role), env.get(var_name))
    for call_name, call in sorted(root.modules.items()):
        source = module_source(root, call)
        if source is not None and source.name == "ecs_service":
            uses = "local.common_environment" in str(call.get("environment", ""))
            report.same(f"module.{call_name} environment includes local.common_environment", True, uses)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--describe-json", metavar="FILE", help="the output of `eventfleet tables describe --json` (instead of running it)")
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="the root Terraform configuration (default: %(default)s)")
    args = parser.parse_args()

    contract = load_contract(args.describe_json)
    try:
        report = check(contract, Path(args.root).resolve())
    except (Unsupported, EvalError) as e:
        print(f"check_names: cannot read the Terraform: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"check_names: a field is missing: {e}", file=sys.stderr)
        return 2
    print(f"consistency: {report.compared} comparisons, {len(report.mismatches)} mismatches")
    if report.mismatches:
        print("Terraform and the code disagree (change both together):", file=sys.stderr)
        for m in report.mismatches:
            print(f"  - {m}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
