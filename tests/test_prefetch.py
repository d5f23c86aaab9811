"""The prefetcher (datasets.train.prefetch_mode: cuda) on the CPU: the plain loader's batches, in order, prepared
the same way, and training with it (also resumed) reaches the same weights as without it."""
import torch

from basicsr_ext.config import resolve_num_gpu, validate_options
from basicsr_ext.data import build_dataset, build_train_loader
from basicsr_ext.data.prefetch import Prefetcher, batch_to_device
from basicsr_ext.models import build_model
from basicsr_ext.utils.checkpoint import load_checkpoint
from test_training import run, tiny_options


def degrading_options(exp, total_iter, prefetch=None):
    opt = tiny_options(exp, total_iter=total_iter)
    opt['datasets']['train'] = {'name': 'photos', 'type': 'SkimagePhotosDataset', 'photos': ['astronaut', 'coffee'],
                                'kernels': True, 'gt_size': 64, 'blur_kernel_size': 11, 'blur_kernel_size2': 11,
                                'patches_per_image': 3, 'batch_size_per_gpu': 2, 'prefetch_mode': prefetch}
    opt['degradation'] = {'type': 'HighOrderDegradation', 'gt_size': 32, 'context': 16, 'usm_radius': 11}
    del opt['datasets']['val']
    opt['logger']['plot_curves'] = False
    return opt


def test_prefetcher_yields_the_plain_loaders_batches_in_order_prepared_alike(tmp_path):
    opt = validate_options(degrading_options(tmp_path, 3))
    opt.update(dist=False, rank=0, world_size=1)
    model = build_model(opt)
    train_opt = opt['datasets']['train']
    loader, sampler = build_train_loader(build_dataset(train_opt), train_opt, opt['manual_seed'])

    def epoch(batches):
        model.degradation.seed(5)
        sampler.set_epoch(1, start=2)  # mid-epoch, as after a resume
        out = []
        for data in batches(iter(loader)):
            model.feed_data(data, len(out) + 1)
            out.append((data['gt_path'], model.lq.clone(), model.gt.clone()))
        return out

    plain = epoch(iter)
    prefetched = epoch(Prefetcher('cpu', model.prepare_batch))
    assert len(plain) == len(prefetched) == 2  # 6 patches, batch 2, from position 2 (one batch) on
    for (paths_a, lq_a, gt_a), (paths_b, lq_b, gt_b) in zip(plain, prefetched):
        assert paths_a == paths_b
        assert torch.equal(lq_a, lq_b) and torch.equal(gt_a, gt_b)
    assert plain[0][1].shape == (2, 3, 8, 8) and plain[0][2].shape == (2, 3, 32, 32)


def test_prefetcher_without_preparation_moves_batches_as_they_are():
    batches = [{'lq': torch.rand(2, 3, 4, 4), 'lq_path': ['a', 'b'], 'kernels': [torch.ones(3), 'x']}]
    out = list(Prefetcher('cpu')(iter(batches)))
    assert len(out) == 1 and out[0]['lq_path'] == ['a', 'b'] and out[0]['kernels'][1] == 'x'
    assert torch.equal(out[0]['lq'], batches[0]['lq']) and torch.equal(out[0]['kernels'][0], torch.ones(3))
    assert batch_to_device('text', 'cpu') == 'text'


def test_training_with_the_prefetcher_resumes_to_the_plain_runs_weights(tmp_path, monkeypatch):
    import basicsr_ext.train
    loaded = []

    class Counting(Prefetcher):
        def load(self, batch, first=True):
            loaded.append(first)
            return super().load(batch, first)

    monkeypatch.setattr(basicsr_ext.train, 'Prefetcher', Counting)
    straight = tmp_path / 'straight'
    run(tmp_path, degrading_options(straight, 4), name='a.yml')
    assert loaded == []
    resumed = tmp_path / 'resumed'
    run(tmp_path, degrading_options(resumed, 2, prefetch='cuda'), name='b.yml')
    run(tmp_path, degrading_options(resumed, 4, prefetch='cuda'), '--auto_resume', name='b.yml')
    # 3 batches per epoch: 2 steps, then a resume at position 2: 1 step, then a new epoch: 1 step
    assert loaded == [True, False, True, True]
    a = load_checkpoint(straight / 'models' / 'net_g_4.pth')
    b = load_checkpoint(resumed / 'models' / 'net_g_4.pth')
    for key in ('params', 'params_ema'):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f'{key}.{name} differs'
    sa = load_checkpoint(straight / 'training_states' / '4.state')
    sb = load_checkpoint(resumed / 'training_states' / '4.state')
    assert torch.equal(sa['degradation']['generator'], sb['degradation']['generator'])
    assert (sa['epoch'], sa['sampler_position']) == (sb['epoch'], sb['sampler_position']) == (1, 1)


def test_pin_memory_null_is_resolved_by_the_device(tmp_path):
    opt = validate_options(degrading_options(tmp_path, 2))
    assert opt['datasets']['train']['pin_memory'] is None
    assert resolve_num_gpu(opt)['datasets']['train']['pin_memory'] is False  # a CPU run (num_gpu: 0)
    opt = validate_options({**degrading_options(tmp_path, 2), 'datasets': {'train': {
        **degrading_options(tmp_path, 2)['datasets']['train'], 'pin_memory': True}}})
    assert resolve_num_gpu(opt)['datasets']['train']['pin_memory'] is True
