"""One way to set up a console + file logger for a run (training and test.py)."""
import logging
import sys

FORMAT = '%(asctime)s %(levelname)s: %(message)s'


def configure_logger(name, level=logging.INFO, log_file=None):
    """The logger ``name`` with exactly one console handler and, if given, one file handler.

    Handlers from an earlier run in the same process are closed first (basicsr's own helper only
    configures a logger once per process, which would keep the first run's log file).
    """
    logger = logging.getLogger(name)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(level)
    logger.propagate = False
    fmt = logging.Formatter(FORMAT)
    stream = logging.StreamHandler(sys.stdout)
    stream.setFormatter(fmt)
    logger.addHandler(stream)
    if log_file:
        file_handler = logging.FileHandler(log_file, 'w', encoding='utf-8')
        file_handler.setFormatter(fmt)
        logger.addHandler(file_handler)
    return logger


def flush_logger(logger):
    for handler in logger.handlers:
        handler.flush()
