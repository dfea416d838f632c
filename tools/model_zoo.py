"""Check the model index against the configs; write the model tables of configs/*/README.md from the metafiles and
the generated pages of the docs (docs/en/model_zoo.md from the metafiles, docs/en/stage_widths.md from the backbones).

    python tools/model_zoo.py            # rewrite the tables (between <!-- model-zoo:begin/end --> in each README)
    python tools/model_zoo.py --check    # change nothing; fail if a table, a page or the model index is out of date
"""
import argparse
import sys

from mmmetaformer.models.backbones.families import stage_table_page
from mmmetaformer.utils.model_index import STAGE_PAGE, check_model_index, update_readmes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--check', action='store_true', help='only check; exit 1 when something is out of date')
    args = parser.parse_args()
    problems = check_model_index()
    outdated = update_readmes(check=args.check, pages={STAGE_PAGE: stage_table_page()})
    for problem in problems:
        print(f'model index: {problem}')
    for readme in outdated:
        print(f'{readme}: {"differs from" if args.check else "rewritten from"} what it is generated from')
    if problems or (args.check and outdated):
        sys.exit(1)


if __name__ == '__main__':
    main()
