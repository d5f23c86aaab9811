"""The JSON Schemas of the option files: the shipped files pass, mistakes are flagged where they are, and the
committed schemas in docs/ are the ones the code generates."""
import copy
import re
import sys

import jsonschema
import pytest
from conftest import REPO

from basicsr_ext.config import validate_options, yaml_load
from basicsr_ext.config.json_schema import dumps, field_schema, section_schema
from basicsr_ext.utils.schema import Field, OptionError, Section

TRAINING_FILES = sorted((REPO / 'options' / 'train').rglob('*.yml')) + sorted((REPO / 'options' / 'demo').glob('*.yml'))
TEST_FILES = sorted((REPO / 'options' / 'test').glob('*.yml'))
DEMO = REPO / 'options' / 'demo' / 'SRResNet_x4_demo.yml'


def _validator(name):
    schema = yaml_load(REPO / 'docs' / name)  # JSON is YAML; any loader will do
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope='module')
def training():
    return _validator('options.schema.json')


@pytest.fixture(scope='module')
def testing():
    return _validator('test_options.schema.json')


def located(error):
    """Dotted location of an error, as the Python validator writes it; an unexpected key is named itself."""
    parts = list(error.absolute_path)
    if error.validator == 'additionalProperties':
        patterns = [re.compile(p) for p in error.schema.get('patternProperties', {})]
        extra = sorted(k for k in error.instance
                       if k not in error.schema.get('properties', {}) and not any(p.search(k) for p in patterns))
        assert len(extra) == 1, error.message
        parts.append(extra[0])
    text = ''
    for p in parts:
        text += f'[{p}]' if isinstance(p, int) else (f'.{p}' if text else p)
    return text


def errors(validator, doc):
    return sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))


def test_shipped_files_exist():
    assert len(TRAINING_FILES) > 20 and DEMO in TRAINING_FILES and TEST_FILES


@pytest.mark.parametrize('path', TRAINING_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_shipped_training_files_validate(training, path):
    assert [located(e) + ': ' + e.message for e in errors(training, yaml_load(path))] == []


@pytest.mark.parametrize('path', TEST_FILES, ids=lambda p: p.name)
def test_shipped_test_files_validate(testing, path):
    assert [located(e) + ': ' + e.message for e in errors(testing, yaml_load(path))] == []


def _demo(**regularizer):
    opt = yaml_load(DEMO)
    if regularizer:
        opt['train']['regularizers'] = [regularizer]
    return opt


MISTAKES = {
    'typo key': (lambda o: o['train'].update(ema_decy=0.999), 'train.ema_decy', 'additionalProperties'),
    'wrong type': (lambda o: o['train'].update(total_iter='many'), 'train.total_iter', 'type'),
    'fractional int': (lambda o: o['train'].update(total_iter=1.5), 'train.total_iter', 'type'),
    'below minimum': (lambda o: o['train'].update(ema_decay=1.5), 'train.ema_decay', 'maximum'),
    'choice': (lambda o: o.update(scale=5), 'scale', 'enum'),
    'regularizer type': (lambda o: o['train']['regularizers'][0].update(type='Dropot'), 'train.regularizers[0].type',
                         'enum'),
    'regularizer key': (lambda o: o['train']['regularizers'][0].update(drop=0.1), 'train.regularizers[0].drop',
                        'additionalProperties'),
    'regularizer value': (lambda o: o['train']['regularizers'][0].update(channel_wise='yes'),
                          'train.regularizers[0].channel_wise', 'type'),
    'dataset key': (lambda o: o['datasets']['train'].update(gt_sise=64), 'datasets.train.gt_sise',
                    'additionalProperties'),
    'dataset type': (lambda o: o['datasets']['val'].update(type='SkimageDataset'), 'datasets.val.type', 'enum'),
    'dataset name': (lambda o: o['datasets'].update(training=o['datasets']['val']), 'datasets.training',
                     'additionalProperties'),
    'arch key': (lambda o: o['network_g'].update(num_blocks=8), 'network_g.num_blocks', 'additionalProperties'),
    'arch type': (lambda o: o['network_g'].update(type='SRResNet'), 'network_g.type', 'enum'),
    'metric type': (lambda o: o['val']['metrics']['psnr'].update(type='psnr'), 'val.metrics.psnr.type', 'enum'),
    'scheduler key': (lambda o: o['train']['scheduler'].update(period=[600]), 'train.scheduler.period',
                      'additionalProperties'),
    'loss key': (lambda o: o['train']['pixel_opt'].update(weight=1.0), 'train.pixel_opt.weight',
                 'additionalProperties'),
    'degradation key': (lambda o: o.update(degradation={'type': 'HighOrderDegradation', 'gt_sz': 96}),
                        'degradation.gt_sz', 'additionalProperties'),
    'missing section': (lambda o: o.pop('train'), '', 'required'),
}


@pytest.mark.parametrize('mistake', MISTAKES)
def test_mistakes_are_flagged_where_the_loader_flags_them(training, mistake):
    change, where, keyword = MISTAKES[mistake]
    opt = _demo(type='Dropout', p=0.7)
    assert errors(training, opt) == []
    change(opt)
    found = errors(training, opt)
    assert [(located(e), e.validator) for e in found] == [(where, keyword)], [e.message for e in found]
    # the Python loader refuses the same file, at the same key (the missing section it names itself)
    with pytest.raises(OptionError, match=r'^' + (where.replace('[', r'\[').replace(']', r'\]') or 'train')):
        validate_options(copy.deepcopy(opt))


def test_null_and_open_parts_are_accepted(training):
    opt = _demo()
    opt['degradation'] = None
    opt['path'].update(pretrain_network_g=None, resume_state=None)
    opt['logger']['wandb'] = {'project': None, 'resume_id': None}  # BasicSR's template
    # basicsr datasets without an OPTIONS schema and non-project archs accept any key, as the loader does
    opt['datasets']['val_paired'] = {'type': 'PairedImageDataset', 'dataroot_gt': 'a', 'whatever': 1}
    assert errors(training, opt) == []
    opt['network_g'] = {'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'unknown_to_the_schema': 1}
    assert errors(training, opt) == []


def test_test_options_mistakes(testing):
    opt = yaml_load(REPO / 'options' / 'test' / 'benchmark_reflash_x4.yml')
    assert errors(testing, opt) == []
    opt['models'][0]['network_g']['num_fet'] = 64
    opt['models'][1]['param_key'] = 'ema'
    opt['metrics']['ms_ssim'] = True
    opt['datasets'] = []
    found = [(located(e), e.validator) for e in errors(testing, opt)]
    assert found == [('datasets', 'minItems'), ('metrics.ms_ssim', 'additionalProperties'),
                     ('models[0].network_g.num_fet', 'additionalProperties'), ('models[1].param_key', 'enum')]


def test_field_conversion():
    assert field_schema(Field(object)) == {}
    assert field_schema(Field(float, 0.5, doc='rate', min=0, max=1)) == {
        'type': 'number', 'default': 0.5, 'description': 'rate', 'minimum': 0, 'maximum': 1}
    # None passes the loader whenever the default is None, so the schema allows null there
    assert field_schema(Field(str, None, choices=('a', 'b'))) == {
        'type': ['string', 'null'], 'default': None, 'enum': ['a', 'b', None]}
    assert field_schema(Field((int, float), (1, 2), item=int)) == {
        'type': 'number', 'default': [1, 2], 'items': {'type': 'integer'}}
    assert field_schema(Field(object, default=object())) == {}  # no JSON form: no default
    assert section_schema({'k': Field(int)}, open=True) == {
        'type': 'object', 'properties': {'k': {'type': 'integer'}}, 'required': ['k'], 'additionalProperties': True}
    nested = field_schema(Section({'a': Field(bool, True)}, doc='s'))
    assert nested['additionalProperties'] is False and 'required' not in nested and nested['description'] == 's'
    with pytest.raises(TypeError, match='no JSON Schema type'):
        field_schema(Field(complex))


def test_committed_schemas_are_current():
    sys.path.insert(0, str(REPO / 'scripts'))
    try:
        import options_reference
    finally:
        sys.path.pop(0)
    files = options_reference.generated()
    for name in ('options.schema.json', 'test_options.schema.json'):
        assert (REPO / 'docs' / name).read_text(encoding='utf-8') == files[name], \
            f'docs/{name} is stale: run python scripts/options_reference.py'
        assert files[name].endswith('}\n')
    assert dumps({'b': 1, 'a': [1]}) == '{\n  "a": [\n    1\n  ],\n  "b": 1\n}\n'
    assert options_reference.main(['--check']) == 0
