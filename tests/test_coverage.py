"""``bash tools/coverage.sh``: pytest under coverage.py with the Python subprocesses that the tests start measured too,
ending with the report of mmmetaformer/."""
import os
import re
import subprocess

import pytest

from conftest import ROOT

# Tests whose only use of mmmetaformer's stack CLI is in child processes: one of the checkout, one of a copy of the
# package in another folder (as a test that installs the built wheel runs it).
CHILD_TEST = '''
import os
import shutil
import subprocess
import sys


def test_pins_printed_by_a_child_process():
    printed = subprocess.run([sys.executable, '-c', 'from mmmetaformer.utils import stack; stack.main(["requirements", '
                              '"torch"])'], capture_output=True, text=True, check=True).stdout
    assert printed.startswith('torch==')


def test_pins_printed_by_a_copy_of_the_package(tmp_path):
    shutil.copytree(os.path.join(ROOT, 'mmmetaformer'), tmp_path / 'site' / 'mmmetaformer')
    printed = subprocess.run([sys.executable, '-c', 'from mmmetaformer.utils import stack; stack.main(["requirements", '
                              '"torch"])'], capture_output=True, text=True, check=True, cwd=tmp_path,
                             env=dict(os.environ, PYTHONPATH=str(tmp_path / 'site'))).stdout
    assert printed.startswith('torch==')
'''


@pytest.mark.e2e
def test_coverage_script_measures_child_processes_and_reports_the_package(tmp_path):
    import coverage
    (tmp_path / 'test_child.py').write_text(f'ROOT = {ROOT!r}\n' + CHILD_TEST)
    data = tmp_path / '.coverage'
    # a run of its own: none of the settings of a coverage run of this suite reach it
    env = {name: value for name, value in os.environ.items() if not name.startswith('COVERAGE_')}
    result = subprocess.run(['bash', 'tools/coverage.sh', str(tmp_path / 'test_child.py')], cwd=ROOT,
                            env=dict(env, COVERAGE_FILE=str(data)), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert '2 passed' in result.stdout and 'No source for code' not in result.stdout + result.stderr
    report = result.stdout.rstrip().splitlines()
    assert report[-1].startswith('TOTAL') and re.match(r'Name\s+Stmts\s+Miss\s+Cover\s+Missing$', report[
        [line.startswith('Name ') for line in report].index(True)])
    assert re.search(r'^mmmetaformer/utils/stack\.py\s+\d+\s+\d+\s+\d+%', result.stdout, re.M), result.stdout
    reported = [line.split()[0] for line in report if re.match(r'\S+\.py\s', line)]
    assert reported and all(name.startswith('mmmetaformer/') for name in reported), reported  # the copy included
    stack_file = os.path.join(ROOT, 'mmmetaformer', 'utils', 'stack.py')
    printing = 1 + next(number for number, line in enumerate(open(stack_file).read().splitlines())
                        if "print('\\n'.join(requirements(args.group, args.torch)))" in line)
    measured = coverage.CoverageData(basename=str(data))
    measured.read()
    assert printing in measured.lines(stack_file)  # run in the child process only
