"""Small pure helpers shared across the package."""
import difflib


def unwrap(net):
    """The bare network inside DataParallel / DistributedDataParallel (or ``net`` itself)."""
    return getattr(net, 'module', net)


def did_you_mean(name, candidates, cutoff=0.6):
    """``"; did you mean 'x'?"`` for the closest candidate, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in candidates], n=1, cutoff=cutoff)
    return f"; did you mean '{close[0]}'?" if close else ''
