"""The C wrapper fourfold adds beside tl2cgen's generated code: ``fourfold_trees.c`` / ``.h``.

tl2cgen's ``predict(union Entry*, int pred_margin, <result>*)`` scores one row from an array of unions and
ADDS into ``result``. The wrapper gives it a caller's plain matrix instead and writes fourfold's raw form:

* ``int fourfold_predict(const ff_input_t *x, long n_rows, double *out)``: row-major ``x``; ``out`` gets
  P(positive) per row (binary), the class probabilities row-major (multiclass) or the value (regression);
* ``int fourfold_predict_row(const ff_input_t *x, double *out)``: one row, nothing allocated (the entries
  and the result live on the stack);
* ``fourfold_n_features()``, ``fourfold_n_outputs()``, ``fourfold_input_bytes()``: what the library was
  built for, so a loader can refuse a library that does not match its spec.

A NaN becomes the missing marker: every byte of the entry set (the int view is -1, what the generated
tests compare against, and the float view a NaN). For a double entry fourfold also rewrites the
generated ``data[i].missing != -1`` into ``!isnan(data[i].fvalue)`` (:func:`patch_missing_tests`): the
int overlays only the low half of the double, so a real value whose low 32 bits are all ones would
otherwise be read as missing.

    >>> "fourfold_predict_row" in wrapper_source(n_features=3, task="binary")
    True
"""

from __future__ import annotations

import re

__all__ = ["HEADER", "generated_types", "patch_missing_tests", "wrapper_header", "wrapper_source"]

HEADER = "fourfold_trees.h"
ABI = 1

_TASK = {"binary": 1, "multiclass": 2, "regression": 3}

_HEADER = """\
/* fourfold_trees.h - written by fourfold: the entry points of a compiled tree ensemble. */
#ifndef FOURFOLD_TREES_H
#define FOURFOLD_TREES_H

typedef {input_c_type} ff_input_t;

int fourfold_predict(const ff_input_t *x, long n_rows, double *out);
int fourfold_predict_row(const ff_input_t *x, double *out);
int fourfold_n_features(void);
int fourfold_n_outputs(void);
int fourfold_input_bytes(void);
int fourfold_abi(void);

#endif
"""

_SOURCE = """\
/* fourfold_trees.c - written by fourfold around tl2cgen's generated predict(). */
#include <math.h>
#include <string.h>

#include "header.h"
#include "{header}"

#define FF_N_FEATURES {n_features}
#define FF_TASK {task}  /* 1 binary, 2 multiclass, 3 regression */
#define FF_N_RESULT (N_TARGET * MAX_N_CLASS)

#if N_TARGET != 1
#error "fourfold scores models with one target"
#endif
#if FF_TASK == 1
/* one value (the sigmoid of the margin) or two (both classes' probabilities): P(positive) is the last */
#if FF_N_RESULT > 2
#error "a binary model must give one or two values per row"
#endif
#define FF_N_OUT 1
#define FF_FIRST (FF_N_RESULT - 1)
#elif FF_TASK == 2
#define FF_N_OUT FF_N_RESULT
#define FF_FIRST 0
#else
#if FF_N_RESULT != 1
#error "a regression model must give one value per row"
#endif
#define FF_N_OUT 1
#define FF_FIRST 0
#endif

typedef {result_c_type} ff_result_t;

static void ff_score(const ff_input_t *x, double *out) {{
  union Entry entry[FF_N_FEATURES];
  ff_result_t result[FF_N_RESULT];
  for (int j = 0; j < FF_N_FEATURES; ++j) {{
    if (isnan(x[j])) {{
      memset(&entry[j], 0xff, sizeof entry[j]); /* int view -1: the generated code's missing marker */
    }} else {{
      entry[j].fvalue = x[j];
    }}
  }}
  for (int k = 0; k < FF_N_RESULT; ++k) {{
    result[k] = 0; /* predict() adds into result */
  }}
  predict(entry, 0, result);
  for (int k = 0; k < FF_N_OUT; ++k) {{
    out[k] = (double)result[FF_FIRST + k];
  }}
}}

int fourfold_predict(const ff_input_t *x, long n_rows, double *out) {{
  if (n_rows < 0 || (n_rows > 0 && (x == NULL || out == NULL))) {{
    return -1;
  }}
  for (long i = 0; i < n_rows; ++i) {{
    ff_score(x + i * FF_N_FEATURES, out + i * FF_N_OUT);
  }}
  return 0;
}}

int fourfold_predict_row(const ff_input_t *x, double *out) {{
  ff_score(x, out);
  return 0;
}}

int fourfold_n_features(void) {{ return FF_N_FEATURES; }}
int fourfold_n_outputs(void) {{ return FF_N_OUT; }}
int fourfold_input_bytes(void) {{ return (int)sizeof(ff_input_t); }}
int fourfold_abi(void) {{ return {abi}; }}
"""

_HEADER_ENTRY = re.compile(r"union Entry \{[^}]*?\b(float|double) fvalue;", re.S)
_HEADER_PREDICT = re.compile(r"void predict\(union Entry\* data, int pred_margin, (float|double)\* result\);")
_MISSING_TEST = re.compile(r"data\[(\d+)\]\.missing != -1")


def generated_types(header: str) -> tuple[str, str]:
    """``(entry value type, result type)`` of tl2cgen's ``header.h``: ``float`` or ``double`` each."""
    entry, predict = _HEADER_ENTRY.search(header), _HEADER_PREDICT.search(header)
    if entry is None or predict is None:
        raise ValueError("tl2cgen's header.h does not declare union Entry / predict() as fourfold expects")
    return entry.group(1), predict.group(1)


def patch_missing_tests(source: str) -> tuple[str, int]:
    """Test a double entry for missing by its NaN, not by the int overlaying its low half."""
    return _MISSING_TEST.subn(r"!isnan(data[\1].fvalue)", source)


def wrapper_header(*, input_c_type: str) -> str:
    return _HEADER.format(input_c_type=input_c_type)


def wrapper_source(*, n_features: int, task: str, result_c_type: str = "float") -> str:
    return _SOURCE.format(
        header=HEADER, n_features=n_features, task=_TASK[task], result_c_type=result_c_type, abi=ABI
    )
