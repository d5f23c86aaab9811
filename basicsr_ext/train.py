"""The training pipeline behind ``python train.py -opt <options.yml>``."""
import logging
import os
import shutil
import sys
import time
import traceback

import torch
from basicsr.utils import get_time_str, set_random_seed
from basicsr.utils import logger as basicsr_logger

from .config import OptionError, load_options, make_parser, resolve_num_gpu, typed_training_options
from .data import build_dataset, build_train_loader, build_val_loader, dataset_name, loader_settings, sample_seed
from .data.prefetch import Prefetcher
from .failures import RunResources, describe_failure
from .models import build_model
from .utils import dist as dist_util
from .utils.checkpoint import (atomic_save, find_resume_state, get_rng_states, load_checkpoint, prune_checkpoints,
                               remove_partial_writes, set_rng_states)
from .utils.curves import TrainingCurves
from .utils.logging import configure_logger
from .utils.progress import ProgressLogger
from .utils.wandb_run import WandbRun


def _prepare_dirs(opt, resuming):
    path = opt['path']
    root = path['experiments_root']
    if not resuming and os.path.isdir(root) and os.listdir(root):
        archived = f'{root}_archived_{get_time_str()}'
        os.rename(root, archived)
        print(f'Existing experiment folder archived to {archived}', flush=True)
    for key in ('experiments_root', 'models', 'training_states', 'visualization'):
        os.makedirs(path[key], exist_ok=True)
    for key in ('experiments_root', 'models', 'training_states'):  # the root holds history.jsonl, curves.png
        for partial in remove_partial_writes(path[key]):
            print(f'Removed an incomplete checkpoint write from a killed run: {partial}', flush=True)
    shutil.copy(opt['opt_path'], os.path.join(root, os.path.basename(opt['opt_path'])))


def _make_logger(opt, rank):
    """basicsr's 'basicsr' logger, with this run's log file (rank 0 only)."""
    log_file = os.path.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log") if rank == 0 else None
    logger = configure_logger('basicsr', logging.INFO if rank == 0 else logging.ERROR, log_file)
    basicsr_logger.initialized_logger['basicsr'] = True  # stop basicsr adding a second console handler
    return logger


def _tb_logger(opt, rank):
    if rank != 0 or not opt['logger']['use_tb_logger']:
        return None
    # tensorboard is slow to import and only runs with use_tb_logger need it
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(log_dir=opt['path']['tb_logger'])


def save_checkpoint(model, opt, epoch, position, current_iter, logger):
    """Weights first, then the training state: a .state file only exists once its weights do.

    Every rank contributes its own random streams (``ranks``); ``rng`` stays rank 0's for tools
    that read single-process states.
    """
    ranks = dist_util.gather_objects({'rng': get_rng_states(), **model.rank_state()})
    if opt['rank'] == 0:
        paths = opt['path']
        model.save_network_atomic(os.path.join(paths['models'], f'net_g_{current_iter}.pth'))
        state = {'epoch': epoch, 'iter': current_iter, 'sampler_position': position, 'rng': ranks[0]['rng'],
                 'ranks': ranks}
        state.update(model.training_state())
        if opt.get('wandb_run_id'):  # a run resumed from this state continues the same wandb run
            state['wandb_run_id'] = opt['wandb_run_id']
        atomic_save(state, os.path.join(paths['training_states'], f'{current_iter}.state'))
        prune_checkpoints(paths['training_states'], paths['models'], opt['logger']['keep_checkpoints'])
        logger.info(f'Saved checkpoint at iteration {current_iter:,d}.')
    dist_util.barrier()


def _diverged(model, opt, current_iter, logger):
    """True on every rank when a loss became non-finite on any rank; logs what to do about it."""
    first = model.nonfinite_iteration()
    if not dist_util.any_rank(first > 0, model.device):
        return False
    paths = opt['path']
    newest = find_resume_state(paths['training_states'], paths['models'])
    where = f'at iteration {first:,d}' if first else 'on another rank'
    losses = ', '.join(f'{k}: {float(v):.4g}' for k, v in model.get_current_log().items())
    logger.error(f'Training stopped: the loss became NaN or infinite {where} (noticed at iteration '
                 f'{current_iter:,d}; last losses {losses}). No checkpoint was written after it; the newest is '
                 f"{newest or 'none'}. Resume from it with --auto_resume after lowering train.optim_g.lr, "
                 "setting train.grad_clip, or using train.amp: bf16 instead of fp16.")
    return True


def _weights_of(state_path, it, models_dir):
    """The net_g file beside ``<root>/training_states/<it>.state``, so a state of another run resumes too."""
    beside = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(state_path))), 'models', f'net_g_{it}.pth')
    return beside if os.path.isfile(beside) else os.path.join(models_dir, f'net_g_{it}.pth')


def _restore_rank_state(model, state, opt, logger):
    ranks = state.get('ranks') or [{'rng': state['rng']}]
    if len(ranks) == opt['world_size']:
        own = ranks[opt['rank']]
        set_rng_states(own['rng'])
        model.load_rank_state(own)
        return
    # the per-process streams cannot be mapped onto another number of processes: start new ones
    logger.warning(f"The checkpoint was written by {len(ranks)} process(es), this run has {opt['world_size']}: "
                   'their random streams start afresh.')
    set_random_seed(sample_seed('resume', opt['manual_seed'], opt['rank'], state['iter']))


def _val_loaders(opt):
    loaders = []
    for name, dopt in opt['datasets'].items():
        if name.startswith('val'):
            loaders.append(build_val_loader(build_dataset(dopt), opt['world_size'], opt['rank']))
    return loaders


def validate_all(model, loaders, current_iter, tb_logger, opt):
    results = {}
    for loader in loaders:
        save_img = opt['val']['save_img']
        results[dataset_name(loader.dataset)] = model.validation(loader, current_iter, tb_logger, save_img)
    return results


def train_pipeline(argv=None):
    """Run ``train.py``; returns the exit code: 0 done or stopped by a signal after saving, 1 failed, 2 bad options,
    130 stopped at once by a second signal."""
    args = make_parser(is_train=True).parse_args(argv)
    try:
        opt = load_options(args.opt, is_train=True, overrides=args.force_yml, debug=args.debug)
        opt = resolve_num_gpu(opt)
    except OptionError as err:
        print(f'Option error: {err}', file=sys.stderr)
        return 2
    run = RunResources()
    progress = {'iter': 0}
    try:
        return _train(opt, args, run, progress)
    except (Exception, KeyboardInterrupt) as err:  # every failure ends here: one message, then cleanup
        return _report_failure(err, opt, run.logger, progress['iter'])
    finally:
        run.close()


def _report_failure(err, opt, logger, iteration):
    paths = opt['path']
    newest = None
    if os.path.isdir(paths['training_states']):
        newest = find_resume_state(paths['training_states'], paths['models'])
    resume = f"The newest complete checkpoint is {newest or 'none'}" + (
        '; continue from it with --auto_resume.' if newest else '.')
    write = logger.error if logger else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if isinstance(err, KeyboardInterrupt):
        write(f'Stopped at once at iteration {iteration:,d} ({err or "interrupted"}), without saving. {resume}')
        return 130
    known = describe_failure(err, opt, iteration)
    if known:
        write(f'{known} {resume}')
        return 1
    if logger:  # the traceback goes to the console and the log file
        logger.exception(f'Training failed at iteration {iteration:,d} with an unexpected {type(err).__name__}. '
                         f'{resume}')
    else:
        traceback.print_exc()
        write(resume)
    return 1


def _train(opt, args, run, progress_state):
    use_cuda = opt['num_gpu'] > 0
    rank, world, local_rank = dist_util.init_dist(args.launcher, use_cuda, opt['dist_params']['backend'],
                                                  opt['dist_params']['port'], opt['dist_params']['timeout'],
                                                  args.local_rank)
    opt.update(rank=rank, world_size=world, local_rank=local_rank, dist=world > 1 or args.launcher != 'none')
    if use_cuda and opt['dist']:
        opt['num_gpu'] = 1
    torch.backends.cudnn.benchmark = opt['cudnn_benchmark']
    if opt['deterministic']:
        torch.use_deterministic_algorithms(True, warn_only=True)

    paths = opt['path']
    resume_path = paths['resume_state']
    if resume_path is None and args.auto_resume and rank == 0:
        resume_path = find_resume_state(paths['training_states'], paths['models'])
    resume_path = dist_util.broadcast_object(resume_path)  # one decision, even without a shared file system
    if rank == 0:
        _prepare_dirs(opt, resuming=resume_path is not None)
    dist_util.barrier()
    logger = run.logger = _make_logger(opt, rank)
    tb_logger = _tb_logger(opt, rank)
    if tb_logger:
        run.closers.append(tb_logger.close)
    set_random_seed(opt['manual_seed'] + rank)

    train_opt = opt['datasets']['train']
    train_set = build_dataset(train_opt)
    loader, sampler = build_train_loader(train_set, train_opt, opt['manual_seed'], world, rank)
    dist_util.shield_workers(loader)
    val_loaders = _val_loaders(opt)
    accumulate = opt['train']['accumulate']
    total_iter = opt['train']['total_iter']
    per_step = f' × {accumulate} accumulated' if accumulate > 1 else ''
    logger.info(f"Training {opt['name']}: {len(train_set):,d} images, batch {train_opt['batch_size_per_gpu']} × "
                f'{world} process(es){per_step}, {len(loader) / accumulate:,.4g} iterations per epoch, '
                f'{total_iter:,d} iterations')

    model = build_model(opt)
    # prefetch_mode cuda: copy and degrade each batch on a side stream while the previous step runs
    prefetch = loader_settings(train_opt).prefetch_mode == 'cuda'
    batches = Prefetcher(model.device, model.prepare_batch) if prefetch else iter
    start_iter, epoch, position = 0, 0, 0
    if resume_path:
        state = load_checkpoint(resume_path)
        start_iter, epoch, position = state['iter'], state['epoch'], state['sampler_position']
        weights = _weights_of(resume_path, start_iter, paths['models'])
        model.load_network_state(load_checkpoint(weights), weights)
        model.resume_training(state)
        _restore_rank_state(model, state, opt, logger)
        logger.info(f'Resumed from {resume_path} (iteration {start_iter:,d}, epoch {epoch}).')

    progress = ProgressLogger(opt, start_iter, logger, tb_logger)
    options = typed_training_options(opt)  # rank, paths and defaults as attributes
    curves = TrainingCurves(options, start_iter if resume_path else None, logger)
    run.closers.insert(0, lambda: (curves.plot(final=True), curves.close()))
    wandb_run = WandbRun(options, state.get('wandb_run_id') if resume_path else None, logger)  # logger.wandb
    run.closers.append(wandb_run.abort)  # marks a run that ends early as failed; a finish() before wins
    opt['wandb_run_id'] = wandb_run.id
    stop = run.stop = dist_util.StopRequest()
    log_cfg, val_cfg = opt['logger'], opt['val']
    current_iter = start_iter
    micro_step = 0  # checkpoints fall on whole steps, so a resumed run starts a fresh accumulation
    results = {}
    skipped = 0  # unreadable training images skipped (on_bad_image: skip), counted in any worker
    while current_iter < total_iter or micro_step:  # a step may span the end of an epoch
        sampler.set_epoch(epoch, start=position * train_opt['batch_size_per_gpu'])
        t_data = time.time()
        for data in batches(run.track_iterator(iter(loader))):
            progress.add_data_time(time.time() - t_data)
            position += 1
            skipped += _skipped_in(data)
            if micro_step == 0:
                current_iter += 1
                progress_state['iter'] = current_iter
                model.update_learning_rate(current_iter, warmup_iter=opt['train']['warmup_iter'])
            model.feed_data(data, current_iter)
            model.optimize_parameters(current_iter, micro_step, accumulate)
            micro_step = (micro_step + 1) % accumulate
            if micro_step:  # the step is not complete: no logging, saving or validation in between
                t_data = time.time()
                continue

            printing = current_iter % log_cfg['print_freq'] == 0 or current_iter == total_iter
            if printing:
                losses = {k: float(v) for k, v in model.get_current_log().items()}
                lrs = model.get_current_learning_rate()
                its = progress(current_iter, epoch, lrs, losses, model.device)
                if skipped:
                    logger.warning(f'{skipped:,d} unreadable training image(s) skipped so far (on_bad_image: skip)')
                curves.log_train(current_iter, epoch, lrs, losses, its)
                wandb_run.log_train(current_iter, epoch, lrs, losses, its)
            stopping = dist_util.any_rank(stop.signal is not None, model.device)
            saving = current_iter % int(log_cfg['save_checkpoint_freq']) == 0 or current_iter == total_iter or stopping
            if (printing or saving) and _diverged(model, opt, current_iter, logger):
                return 1
            if saving:
                save_checkpoint(model, opt, epoch, position, current_iter, logger)
            if stopping:
                logger.info(f'Stopped by signal at iteration {current_iter:,d}; continue with --auto_resume.')
                wandb_run.finish()
                return 0
            validating = val_loaders and (current_iter % int(val_cfg['val_freq']) == 0 or current_iter == total_iter)
            if validating:
                results = validate_all(model, val_loaders, current_iter, tb_logger, opt)
                curves.log_validation(current_iter, results)
                wandb_run.log_validation(current_iter, results)
            if saving or validating:  # once for both: drawing is the slow part
                curves.plot()
            if current_iter >= total_iter:
                break
            t_data = time.time()
        else:
            epoch += 1
            position = 0

    if val_loaders and not results:
        results = validate_all(model, val_loaders, current_iter, tb_logger, opt)
        curves.log_validation(current_iter, results)
        wandb_run.log_validation(current_iter, results)
    for name, metrics in results.items():
        summary = ', '.join(f'{m}: {v:.4f}' for m, v in metrics.items())
        logger.info(f'Final validation on {name} at iteration {current_iter:,d}: {summary}')
    if skipped:
        logger.warning(f'{skipped:,d} unreadable training image(s) were skipped (on_bad_image: skip).')
    logger.info(f'Training finished. Checkpoints are in {paths["models"]}')
    wandb_run.finish()
    return 0


def _skipped_in(batch):
    count = batch.get('skipped') if isinstance(batch, dict) else None
    return int(count.sum()) if torch.is_tensor(count) else 0
