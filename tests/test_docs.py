"""The generated option reference is current, and the README links only to files that exist."""
import re
import subprocess
import sys

from conftest import REPO


def test_option_reference_is_up_to_date():
    sys.path.insert(0, str(REPO / 'scripts'))
    try:
        import options_reference
    finally:
        sys.path.pop(0)
    assert (REPO / 'docs' / 'options.md').read_text() == options_reference.render(), \
        'docs/options.md is stale: run python scripts/options_reference.py'


def test_readme_links_and_scripts_exist():
    readme = (REPO / 'README.md').read_text()
    for target in re.findall(r'\]\(([^)#]+)\)', readme):
        if not target.startswith('http'):
            assert (REPO / target).exists(), f'README links to missing {target}'
    for script in re.findall(r'`(scripts/[\w./]+)`', readme):
        assert (REPO / script).exists(), f'README names missing {script}'


def test_shell_wrappers_are_valid_bash():
    for script in ('scripts/dist_train.sh', 'scripts/slurm_train.sh', '.ci/run'):
        assert subprocess.run(['bash', '-n', str(REPO / script)]).returncode == 0


def test_readme_minimal_options_validate(shared_datasets):
    from basicsr_ext.config import validate_options, yaml_load
    readme = (REPO / 'README.md').read_text()
    block = readme[readme.index('name: SRResNet_x4_baseline'):]
    raw = yaml_load(block[:block.index('```')])
    raw['datasets']['train']['dataroot_gt'] = str(shared_datasets / 'T91' / 'HR')
    raw['datasets']['val'].update(dataroot_gt=str(shared_datasets / 'Set5' / 'HR'),
                                  dataroot_lq=str(shared_datasets / 'Set5' / 'HR'))
    opt = validate_options(raw)
    assert opt['train']['regularizers'][0]['type'] == 'Dropout' and opt['degradation']['gt_size'] == 128
