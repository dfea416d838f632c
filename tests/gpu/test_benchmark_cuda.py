"""``tools/benchmark.py --device cuda`` runs every one of its GPU rows to the end and reports numbers."""
import os
import re
import subprocess
import sys

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'tools')
MODELS = ['poolformer_s12', 'poolformerv2_s12', 'convformer_s18', 'caformer_s18']
ROW = re.compile(r'^(\S+)\s+(inference|train|dense)\s+cuda (fp32|fp16|bf16)(?: channels-last)? (?:eager|compiled|'
                 r'blocks-compiled)\s+timm\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)x\s+(\d+)\s+(\d+)$')


def test_benchmark_rows_run_to_the_end_on_the_gpu():
    command = [sys.executable, os.path.join(TOOLS, 'benchmark.py'), '--device', 'cuda', '--modes', 'inference',
               'train', '--models', *MODELS, '--batch-size', '16', '--iters', '3', '--warmup', '1']
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [ROW.match(line.strip()) for line in result.stdout.splitlines()]
    rows = [row for row in rows if row]
    seen = {(row[1], row[2], row[3]) for row in rows}
    expected = {(model, mode, precision) for model in MODELS for mode in ('inference', 'train')
                for precision in ('fp32', 'fp16', 'bf16')}
    assert seen == expected, result.stdout
    for row in rows:  # images per second and peak memory of both sides, all measured
        assert float(row[4]) > 0 and float(row[5]) > 0 and int(row[7]) > 0 and int(row[8]) > 0, row[0]
