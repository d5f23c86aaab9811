"""A checkpoint written before the layering change (issue 10) still loads and resumes to the same weights.

tests/fixtures/pre_layering/ holds the options, the iteration-4 weights and training state of a
run made by the code of before the change (regularizers then lived inside the network), and the
iteration-8 weights of the same run uninterrupted. Resuming at 4 with today's code must reach them
exactly: weights, EMA and the learnable regularizer parameters. Both runs use one torch thread, so the
sums of the convolutions are reduced in the same order whatever the machine's core count.
"""
import shutil

import torch
import yaml

from basicsr_ext.train import train_pipeline
from conftest import REPO

FIXTURE = REPO / 'tests' / 'fixtures' / 'pre_layering'


def test_pre_layering_checkpoint_resumes_to_the_uninterrupted_weights(tmp_path):
    old = tmp_path / 'old_run'
    (old / 'models').mkdir(parents=True)
    (old / 'training_states').mkdir()
    shutil.copy(FIXTURE / 'net_g_4.pth', old / 'models')
    shutil.copy(FIXTURE / '4.state', old / 'training_states')
    opt = yaml.safe_load((FIXTURE / 'options.yml').read_text())
    opt['path'] = {'experiments_root': str(tmp_path / 'resumed'),
                   'resume_state': str(old / 'training_states' / '4.state')}
    opt_file = tmp_path / 'opt.yml'
    opt_file.write_text(yaml.safe_dump(opt))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_pipeline(['-opt', str(opt_file)]) == 0
    finally:
        torch.set_num_threads(threads)

    resumed = torch.load(tmp_path / 'resumed' / 'models' / 'net_g_8.pth')
    expected = torch.load(FIXTURE / 'net_g_8.pth')
    assert set(resumed) == set(expected) == {'params', 'params_ema', 'params_regularizers'}
    for part in expected:
        assert set(resumed[part]) == set(expected[part]), part
        for key, value in expected[part].items():
            assert torch.equal(resumed[part][key], value), f'{part}.{key} differs'
