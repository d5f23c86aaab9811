"""Training history (``experiments/<name>/history.jsonl``) and its curves (``curves.png``).

The history holds one JSON object per line:

    {"kind": "train", "iter": 100, "epoch": 0, "lr": [0.0002], "losses": {"l_pix": 0.031}, "it_per_s": 5.7,
     "time": 1732000000.0}
    {"kind": "val", "iter": 5000, "val_set": "Set5", "metrics": {"psnr": 29.77}, "better": {"psnr": "higher"},
     "time": 1732000000.0}

(one line each in the file; ``time`` is the Unix time of the record).

Each record is appended and flushed on its own, so a killed run keeps everything it logged. A run that
resumes from iteration k first drops the records past k: that part of the run is done again, and the
history of a killed and resumed run then has the iterations of an uninterrupted one.

Plots of it are in :mod:`.curve_plots`; :class:`~.curves.TrainingCurves` is what the training loop calls.
"""
import json
import os
import time

from .checkpoint import atomic_write

HISTORY_FILE = 'history.jsonl'
_KINDS = ('train', 'val')


# ---------------------------------------------------------------------------------------------- reading
def history_path(path):
    """The history.jsonl of an experiment folder, or ``path`` itself when it is a file.

    Raises FileNotFoundError with a one-line message naming ``path``.
    """
    path = str(path)
    if os.path.isdir(path):
        candidate = os.path.join(path, HISTORY_FILE)
        if not os.path.isfile(candidate):
            raise FileNotFoundError(f'{path}: no {HISTORY_FILE} in this folder')
        return candidate
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{path}: no such experiment folder or history file')
    return path


def _check_record(record):
    """Why ``record`` is not a history record, or None."""
    if not isinstance(record, dict):
        return f'expected a JSON object, got {type(record).__name__}'
    if record.get('kind') not in _KINDS:
        return f"'kind' must be one of {', '.join(_KINDS)}, got {record.get('kind')!r}"
    if not isinstance(record.get('iter'), int) or isinstance(record.get('iter'), bool):
        return f"'iter' must be an integer, got {record.get('iter')!r}"
    table = 'losses' if record['kind'] == 'train' else 'metrics'
    if not isinstance(record.get(table), dict):
        return f"a {record['kind']} record needs a '{table}' object"
    if record['kind'] == 'val' and not isinstance(record.get('val_set'), str):
        return "a val record needs a 'val_set' name"
    return None


def read_history(path):
    """The records of a history.jsonl (a file, or an experiment folder holding one).

    A last line without its newline that does not parse is what a kill in the middle of a write leaves;
    it is dropped. Any other line that is not a history record raises ValueError naming file and line.
    """
    path = history_path(path)
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    # after a complete write the text ends with '\n', so the last element is '' unless a write was cut short
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):
                break
            raise ValueError(f'{path}, line {number}: not valid JSON ({err.msg} at column {err.colno})') from None
        problem = _check_record(record)
        if problem:
            raise ValueError(f'{path}, line {number}: {problem}')
        records.append(record)
    return records


def _records_of(history):
    """Records from a path, or a list of records passed through."""
    if isinstance(history, (str, os.PathLike)):
        return read_history(history)
    return list(history)


# ---------------------------------------------------------------------------------------------- writing
def _dump(record):
    # NaN/inf losses are kept (json writes NaN/Infinity and reads them back): a diverging run should show it
    return json.dumps(record, separators=(', ', ': ')) + '\n'


def truncate_history(path, last_iter):
    """Keep the records up to and including ``last_iter``, rewriting ``path`` atomically; returns them.

    Also drops a last line cut short by a kill, which appending would otherwise glue to the next record.
    """
    kept = [r for r in read_history(path) if r['iter'] <= last_iter]

    def write(tmp):
        with open(tmp, 'w', encoding='utf-8') as f:
            f.writelines(_dump(r) for r in kept)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)
    return kept


class History:
    """Appends records to a history.jsonl, one flushed line each.

    ``resume_iter=None`` starts a fresh file; an iteration truncates an existing file to it (see module doc).
    """

    def __init__(self, path, resume_iter=None):
        self.path = str(path)
        self.records = []
        if resume_iter is not None and os.path.isfile(self.path):
            self.records = truncate_history(self.path, resume_iter)
        self._file = open(self.path, 'a' if resume_iter is not None else 'w', encoding='utf-8')
        self._val_keys = {(r['iter'], r['val_set']) for r in self.records if r['kind'] == 'val'}

    def _append(self, record):
        record['time'] = round(time.time(), 3)
        self._file.write(_dump(record))
        self._file.flush()
        self.records.append(record)

    def log_train(self, iteration, epoch, lrs, losses, it_per_s):
        self._append({'kind': 'train', 'iter': int(iteration), 'epoch': int(epoch), 'lr': [float(x) for x in lrs],
                      'losses': {k: float(v) for k, v in losses.items()}, 'it_per_s': float(it_per_s)})

    def log_validation(self, iteration, val_set, metrics, better=None):
        """Returns False (and writes nothing) when this iteration of ``val_set`` is already in the history:
        a run resumed from its final checkpoint validates again what the history already holds."""
        if (iteration, val_set) in self._val_keys:
            return False
        better = better or {}
        self._append({'kind': 'val', 'iter': int(iteration), 'val_set': str(val_set),
                      'metrics': {k: float(v) for k, v in metrics.items()},
                      'better': {k: better.get(k, 'higher') for k in metrics}})
        self._val_keys.add((iteration, val_set))
        return True

    def close(self):
        self._file.close()
