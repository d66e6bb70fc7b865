"""``genostage image build|push|list``: the container images under ``containers/``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import CommandTailParser


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("image", help="build and push the container images (containers/)",
                                   description="Build the images under containers/ (the source checkout's, or "
                                   "the copy shipped with genostage) with docker (where an engine answers "
                                   "'docker info') or podman, and push them to ECR.")
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION", parser_class=CommandTailParser)
    sub.required = True

    b = sub.add_parser("build", help="build an image (a tool image builds the base first)")
    b.add_argument("tool", metavar="TOOL", help="base, or a tool folder under containers/ (genostage image list)")
    b.add_argument("--tag", help="image tag (default genostage/TOOL:VERSION, VERSION-arm64 for arm64)")
    b.add_argument("--base", metavar="IMAGE", help="use this base image instead of building genostage/base")
    b.add_argument("--wheel", type=Path, metavar="FILE",
                   help="the genostage wheel the base image installs (default: built from the source checkout; "
                   "needed when genostage is installed from a wheel)")
    b.add_argument("--python", default=sys.executable, metavar="EXE",
                   help="interpreter that builds the genostage wheel (default: this one; match the image's CPython)")
    _common(b)
    b.set_defaults(func=_build)

    p = sub.add_parser("push", help="push a built image to ECR (creates the repository if missing)")
    p.add_argument("tool", metavar="TOOL")
    p.add_argument("--registry", required=True, metavar="ECR_URI_OR_ACCOUNT",
                   help="ACCOUNT.dkr.ecr.REGION.amazonaws.com[/PREFIX] or a 12-digit account id")
    p.add_argument("--region", help="AWS region (default: from the registry URI or AWS_REGION)")
    p.add_argument("--tag", help="local image to push (default genostage/TOOL:VERSION[-arm64])")
    _common(p)
    p.set_defaults(func=_push)

    ls = sub.add_parser("list", help="the images under containers/ and their tags")
    ls.add_argument("--repo", type=Path, help="genostage source tree (default: the checkout genostage runs "
                    "from, else the copy shipped with genostage)")
    ls.add_argument("--platform", choices=["x86_64", "arm64"], default="x86_64", help="tags for this architecture")
    ls.set_defaults(func=_list)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=["docker", "podman"], help="default: docker if it answers, else podman")
    parser.add_argument("--platform", choices=["x86_64", "arm64"],
                        help="architecture (default: this machine's); another one builds under qemu-user-static")
    parser.add_argument("--repo", type=Path, help="genostage source tree (default: the checkout genostage runs "
                        "from, else the copy shipped with genostage)")


def _build(args: argparse.Namespace) -> int:
    from ..deploy import image

    engine = image.detect_engine(args.engine)
    built = image.build(args.tool, tag=args.tag, engine=engine, repo=args.repo, base=args.base, python=args.python,
                        platform=args.platform, wheel=args.wheel)
    print(built)
    return 0


def _push(args: argparse.Namespace) -> int:
    from ..deploy import image

    engine = image.detect_engine(args.engine)
    for ref in image.push(args.tool, args.registry, region=args.region, engine=engine, repo=args.repo,
                          tag=args.tag, platform=args.platform):
        print(ref)
    return 0


def _list(args: argparse.Namespace) -> int:
    from ..deploy import image

    containers = image.containers_dir(args.repo)
    for name in image.list_images(containers):
        spec = image.image_spec(containers, name)
        sys.stdout.write(f"{name}\t{spec.tag_for(args.platform)}\n")
    return 0
