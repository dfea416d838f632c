"""Check the model index against the configs and write the model tables of configs/*/README.md from the metafiles.

    python tools/model_zoo.py            # rewrite the tables (between <!-- model-zoo:begin/end --> in each README)
    python tools/model_zoo.py --check    # change nothing; fail if a table or the model index is out of date
"""
import argparse
import sys

from mmmetaformer.utils.cli import exit_on_user_error
from mmmetaformer.utils.model_index import check_model_index, update_readmes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--check', action='store_true', help='only check; exit 1 when something is out of date')
    args = parser.parse_args()
    with exit_on_user_error():  # a metafile the index names is missing, a README without table markers
        problems = check_model_index()
        outdated = update_readmes(check=args.check)
    for problem in problems:
        print(f'model index: {problem}')
    for readme in outdated:
        print(f'{readme}: table {"differs from" if args.check else "rewritten from"} its metafile')
    if problems or (args.check and outdated):
        sys.exit(1)


if __name__ == '__main__':
    main()
