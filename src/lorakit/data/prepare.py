"""``lorakit data prepare TASK --to DIR [--from PATH]``: put a task's data where its plugin reads it.

With internet, the files come from the canonical source (GLUE's and SuperGLUE's release zips, the
SentEval copy of MRPC and GLUE's MRPC dev ids, the SQuAD explorer site, the Natural Questions bucket
``storage.googleapis.com/natural_questions``: the simplified train file and the original-format dev file
``nq-dev-all.jsonl.gz``; for the NLG datasets the official
repositories: E2E ``tuetschek/e2e-dataset`` and DART ``Yale-LILY/dart`` on GitHub, WebNLG 2017 the WebNLG
dataset repository ``shimorina/webnlg-dataset`` on GitLab, folder ``webnlg_challenge_2017``).
``--from PATH`` uses an already-downloaded folder or zip instead, with no network. Either way every file
with a pinned digest (below: a SHA-256, or the SHA-1 its publisher gives) is checked and a mismatch stops with the
file, the expected and the actual digest; files without a pinned digest are copied with a note printing their
SHA-256 (so it can be pinned).
Offline without ``--from``, the command fails within seconds and says what to download.

Layout written: GLUE ``DIR/RTE/train.tsv`` ... (MNLI: ``DIR/MNLI/{train,dev_matched,dev_mismatched}.tsv``;
QQP from GLUE's ``QQP-clean.zip``, QNLI from ``QNLIv2.zip``; MRPC's train/dev split is rebuilt from
``msr_paraphrase_train.txt`` and ``dev_ids.tsv`` with the rule of GLUE's ``download_glue_data.py``); SQuAD
``DIR/train-v1.1.json``, ``DIR/dev-v1.1.json`` (v2.0 likewise); Natural Questions
``DIR/nq/simplified-nq-train.jsonl.gz``, ``DIR/nq/nq-dev-all.jsonl.gz``; SuperGLUE ``DIR/BoolQ/train.jsonl`` ...;
E2E ``DIR/e2e/trainset.csv``, ``devset.csv``, ``testset_w_refs.csv``, ``testset.csv``; WebNLG
``DIR/webnlg_challenge_2017/{train,dev}/{n}triples/*.xml`` and ``test/testdata_*.xml``; DART
``DIR/dart/dart-v1.1.1-full-{train,dev,test}.json`` (or ``.xml``); LM corpora (from mattmahoney.net/dc
and the WikiText release zip on wikitext.smerity.com, all pinned) ``DIR/enwik8/enwik8``, ``DIR/text8/text8``,
``DIR/hutter/enwik9``, ``DIR/wikitext-2/`` and ``DIR/wikitext-103/wiki.{train,valid,test}.tokens``, Tiny
Shakespeare ``DIR/tinyshakespeare/input.txt`` (karpathy/char-rnn); OpenWebText (the open re-creation of
WebText: its authors' release archive ``openwebtext.tar.xz`` on Zenodo, pinned; or with ``--from`` that file, the
21 tar shards of the Hugging Face dataset ``Skylion007/openwebtext``, the ``.xz`` archives inside them or its
parquet files, whose digests are recorded, not pinned) ``DIR/webtext/{train,valid,test}.txt``,
split by :mod:`lorakit.data.openwebtext` (``--holdout``, ``--max-train-docs``). The NLG folders are then read
with :mod:`lorakit.data.nlg` (a file that does not parse stops the command); a DART folder given with
``--from`` may hold only some splits.

Every prepared folder gets ``lorakit-prepare.json``: each file's SHA-256, whether it was checked against a pinned
digest, the task and the source. For files without a pinned digest (OpenWebText's Hugging Face shards or
parquet files, a few GLUE/SuperGLUE files) this is the record of which copy a result was computed on.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlparse

from lorakit import __version__ as _VERSION
from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write

__all__ = ["MANIFEST", "PrepareError", "SOURCES", "prepare", "main"]

MANIFEST = "lorakit-prepare.json"  # in each prepared folder: the SHA-256 of every file, pinned or not


class PrepareError(LorakitError, RuntimeError):
    """The data cannot be prepared; the message says why and what to do."""


@dataclass(frozen=True)
class Source:
    """Where a task's files come from: ``urls`` (file name or zip -> URL), the files the task needs (path
    relative to the output folder -> pinned SHA-256 or None), and the subfolder they go in."""

    folder: str
    urls: dict[str, str]
    files: dict[str, str | tuple[str, ...] | None]  # None: not pinned; a tuple: any of these releases;
    # a digest is a SHA-256 in hex, or "ALGORITHM:HEX" (e.g. "sha1:...") where the publisher gives another
    note: str = ""
    build: str = ""  # "mrpc": rebuild train/dev from the MSR file and the dev ids
    extra: dict[str, str | None] = field(default_factory=dict)  # inputs of `build`, with their digests
    optional: tuple[str, ...] = ()  # files that may be missing (noted, not an error)
    partial: bool = False  # with --from: any file may be missing, as long as one is found
    reader: str = ""  # NLG dataset name: check the prepared folder with lorakit.data.nlg


_GLUE = "https://dl.fbaipublicfiles.com/glue/data/"
_SUPERGLUE = "https://dl.fbaipublicfiles.com/glue/superglue/data/v2/"
_SQUAD = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
_NQ = "https://storage.googleapis.com/natural_questions/v1.0-simplified/"
_E2E = "https://raw.githubusercontent.com/tuetschek/e2e-dataset/ab0d967dd5729ce455ef14ba9ffafc456a335264/"
# The official WebNLG dataset repository (GitHub copies such as fuzihaofzh/webnlg-dataset hold the same files).
_WEBNLG = "https://gitlab.com/shimorina/webnlg-dataset/-/raw/master/webnlg_challenge_2017/"
# Matt Mahoney's site, the canonical home of enwik8/enwik9 (Hutter Prize) and text8
_HUTTER = "http://mattmahoney.net/dc/"
# WikiText's author's copy of the release zips (Salesforce's original S3 location answers 403 since 2024)
_WIKITEXT = "https://wikitext.smerity.com/"
_SHAKESPEARE = ("https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/"
                "data/tinyshakespeare/")
# OpenWebText's release archive (its authors' Zenodo record; the Hugging Face dataset Skylion007/openwebtext
# holds the same .xz archives regrouped into 21 tar shards, with no published digests)
_OWT = "https://zenodo.org/records/3834942/files/"
_DART = "https://raw.githubusercontent.com/Yale-LILY/dart/bb644b12ec1d0264f96a31145534b9a94f6ff5f5/data/v1.1.1/"

# WebNLG 2017 challenge train/dev XML files: "split n-triples category sha256"; the file is
# {split}/{n}triples/{n}triples_{category}_{split}_challenge.xml (n = 1: 1triple_allSolutions_{category}_...).
_WEBNLG_TABLE = """
dev 1 Airport 93dd0a98791c9df1e5d53289840ec73c86e751cd892b5ebbd0070bb2b13bac99
dev 1 Astronaut 520e3df154d02a585c9b16fcec1e2a983fa5a13ab52c12cc64b43ce808c05e8e
dev 1 Building ed15a33716191fe5a24f6b366292e50e4444e1f80b1cee3e99834b7561c81b8b
dev 1 City e31d134b3a45140cc61093be0d17249e6b6ca356e50b81a2f48352536ecb2dac
dev 1 ComicsCharacter 984cfc0c4862e9ffd9c35a9402c24a17545754da95a09c0a23b1f0c5552e24e9
dev 1 Food 7a8763f6a385ae219c7ec14db5062a2b2ec43d26c87639fe86731f9417001eb4
dev 1 Monument 34168eb7e81478374f35e520680f91d1cce87268aa96b2f88ef2a094b1b6e371
dev 1 SportsTeam 2febc7f2b1c68e15fcdabd2217e8e2d3af2a176599054a19134052abdcc9c17f
dev 1 University 3babb23a13ed46443d06564e12579ce6a9165af6ca370c6cb48c2c03b55714c9
dev 1 WrittenWork 5b8b1720cb95d767bdef1cc7d274406dbc16dc3e5aeafdd74e7d5fb51c08cb92
dev 2 Airport f3031d4cf868fe7bbeeabe627c5ceed9289f70dd11bb34c19c8b70ef10a4695a
dev 2 Astronaut 6ebd2f0875c22209e51f25f6a4895bf375514d8abbc1c218b0dcdad9e7487352
dev 2 Building 2f38b2a8bc86635504c97cb137a01842e25d249f12171ce28137929c5e303711
dev 2 ComicsCharacter 64b1b9d8cd805b5ae50ba879519be85471b1f32860184abcf9fdada455ab39ac
dev 2 Food 008e8184db0b4798353bc6394e2a61757bd4068c134966fc380321ebe14f3e55
dev 2 Monument 4ae6e1114fe0d15e85d9114bc677bf05bcea9b76000cc2831bb291373983fade
dev 2 SportsTeam 60f6f4fdfda7b4594051e7a8e2cfef3a89bc72d0a81f20acacedc74adcd9a92b
dev 2 University 5404aea185e3649536a7d39773ba66540598089772cbf53ce56769518cb54bfd
dev 2 WrittenWork 66b1d1b60152a40cab369ae2a6120954779ce06369a81fc8e5c4ede6ec9543e2
dev 3 Airport 00430e5312b17da56447f69deb3534c24c2161b50e48de7966b5b0c1fb10d315
dev 3 Astronaut e78277b73024add17526aed538d675b7ef4d80a77f339db3ba51d248c14766cc
dev 3 Building b36251a66dae3f562fe9e695073d65738094a63693a097e160ed3a11a51fd0a2
dev 3 ComicsCharacter b54cb6dc47163810c759c081e226c58c2b2ef54505f64871653c929cfb5a26c6
dev 3 Food 1b2f4e4d8949c0d7762976c4b8ee676469999fa268c9f70055341ea7b114897c
dev 3 Monument e7198a1b7e8084555ae85489f6473e54830656f33fbd9ef1b7927331e6a6fa5c
dev 3 SportsTeam 5f93f50c984911649a0b7ff2e85a1c22bfbf924c4a86f94716f31f85e74bb51f
dev 3 University 5ffaad721ccd9a7d26cbaaf5ff4d8e72fd4f38a86da20ad7125bc16dada196b1
dev 3 WrittenWork 49041cfa8a9ad15eff489cb968e522a3647beda7794230c490b46a3964b77ce7
dev 4 Airport e17291f5d47a1254215afa852d4b0a2896b4ab4d1cf304ac56ee61e12d36f218
dev 4 Astronaut 95be9ffdc2a70eb0dfa4be2381551e6d8a4280ab4da13113d4916002e5545d3c
dev 4 Building ba1eaeef5b41d85543b68e71da80a152a04cf9d8383bedc61926168ff0bec3c3
dev 4 ComicsCharacter 68563766d8044eb4cc7aeab14444b347fb7bbd73bb01e7b3c4b1c5c70ccc8829
dev 4 Food 7b0be66dccbed8cc1f4ab2b43d299653278988f5969681920c69ae15a88bf646
dev 4 Monument 65fc7b3ba50d35a1a6b62a0afc58b3d29283a550fa64ec36913d5ed2a3c4258f
dev 4 SportsTeam 7cc6115ebfb378bd7b8440f0ea22021c18217d5339d4981936bca15b09706351
dev 4 University 311403ad989530134d2e719a9fcdbf1dd641b2a61f869cd495a0a52d4a8a793f
dev 4 WrittenWork 02b7fa944571729ce232ed80c4e7dee1bc8a5837a707e8b93d936e3788421b21
dev 5 Airport b49c4a927e40b2f18d3caf4e16713d5f557e7fc528bbcfd080a20cc3123e18df
dev 5 Astronaut 347ab9ad1d0620f26c1050644d76f9c1c2057fbea0eddc54e3587470b0f80784
dev 5 Building 8f32c963c83e3aa5d170c8bbf48b54b3bc91d4fb071b6c7954d4af516e2dee44
dev 5 ComicsCharacter c2a5c96467944649878051e32b00abc759bf6c97ce2eea8dfebecb74160200ff
dev 5 Food 5fdcfadb78d061023abe94d61677f39d1eeb845208fa42e5c5862470dfa29483
dev 5 Monument 60d1b0719a64f21f961a1f2fe52d9b6083f9f717d6b0f24546f9f90d0f358af2
dev 5 SportsTeam 66bf78fab04c629e397f3dcb869cbb82147d08eb600e0e16277db164e3c4c8de
dev 5 University a43f2eb627e363ff8fb3578b6aeec90b162844f27ebf66f376ae1c7097e8532c
dev 5 WrittenWork 9794ef205ef91718b487177cb8eaabc870e32ff4d6d195d010c7c90b36f17dc9
dev 6 Astronaut 5c6304c4e663c9004d07d2cb6048da388c92f9dc873c9759b626d1159a5bdc04
dev 6 Monument 574e58cfbd6e72f3d0f14e92253b44a724b466e9553208392c773ae734269f0b
dev 6 University 775690fa97aa672694252da917bff50f39447b415c61dd7a953df43b4690419d
dev 7 Astronaut bab7560ca964cc5b7e20b2a2e33822fcc6ea372d2e9e036bec63ea177c10f4d7
dev 7 Monument 4de385ac768c71ee86f0148c304fa0c2bd94b9f77d30aaf3601f719f4441ecf5
dev 7 University f62020ba398dfbef68a74d470dc79f8fb6d27a675ae31a089e1e782f5ec6162f
train 1 Airport 7a7ae89429f6b39de4a91709b7682d622bb3596f2026158f3e1726f16e5e1b8a
train 1 Astronaut 4f256da55c70a3b50bd006f5c384b13ce75a914b7e1e8c19a607e8ebada309a2
train 1 Building 88f6ebd60157abfeafc62a0396068ebe3eae7bf2f0dcbfa2107138eb90e1ce9f
train 1 City 13adb0d860390f4866fdb5c1018532c51cf50ec123267b8e685b135afe2b86d4
train 1 ComicsCharacter d5c1964b0a55c9443068516d7f4058e86a3d069b1570f679f7c4fe178480c769
train 1 Food a64a70aa72bc2bacb28b61683a687f7345bc46a6aa6396bb6759730340123de9
train 1 Monument 6988cb5f17c74abf6902cbca1ffd92594c252a9b685876ba461f68796d4c945b
train 1 SportsTeam b548204ba4f2f4dd185771d7b0721046cbaaf25c7adf346b627b100c3a10b954
train 1 University cffd2208345ca3367426fdafed3897d796254499a00ad2b977818ed15b407f79
train 1 WrittenWork cb4102c666cbf99221ba1e03ef159e94c10107669fb28039ab43358e0b557664
train 2 Airport a739392a1a316647adda0ba914ffa7a2e01f9369e545681493fc58604b8d9f08
train 2 Astronaut c46d963888b96162737eef599cb509ec61ae7ac0b7576b50bb4a773c629a4f6c
train 2 Building 29e2c3693ea085a0626689e5b216db97d22287e5c868232c3b7b73400e795b2a
train 2 ComicsCharacter 504cd7686eed924c20886a1406d58c93cceed916c69eb110f32bd402445922a1
train 2 Food d167bd310b4c590f2fb89f5a3c060697417f96e55e48405bd373d82a0c2b53bf
train 2 Monument c72ce492b6175acee6323a561e462cc1728c5f4aa857c6d1613b113098fa842f
train 2 SportsTeam ad40cfe2b743b9553b72583bb080aa05d070f11e41229ac63586f6adfe08c2e4
train 2 University 8636876bf0867d82c467d4156dc633947e93d4c4b7b0a11ac5a10f5e900b4c43
train 2 WrittenWork e33a3300735c0d5380a9ac30997ce918f2cda566974ba6ad2e9c69199fc495fe
train 3 Airport a159f60f29160d2a4639cd47a172c0fb279b437bf8927598d35fb10a8132fc94
train 3 Astronaut 6c1259cbc54d28ee728ccb6ed11fb6209bef42875de4a1b7936832585e5cb5ae
train 3 Building f7365d94733f5c17488ba7f4d4ff81b603dc2abcf7d6a61e670e30998e19a30c
train 3 ComicsCharacter 63d3b880e723f3a60c8d9523fbed1dd8baea87a05716fd0274d4c50dac35f0aa
train 3 Food d8845a3db25eca48502da20f828819d6dce20a2e6c6ca1fe390ea439c27145ac
train 3 Monument adadc1c4c592fd27fc78393d851729a5aca55b3db2b2390afe8485caa49a6f2f
train 3 SportsTeam f5ff678418c661a57c22b501a1cfb6f8f5d879b2737c680a4e0d7d5ab9c107ab
train 3 University b0dce6f94b1e35e9e08a7bc8738503112091fd95753cf7f0e7565361070a6363
train 3 WrittenWork 98baedc0f596786f9980c6eca6f04426896d8101bd81b3968d63bf46d10eee07
train 4 Airport 5d061dc0e38c1fc908b7857a07250bfda10658c48e8b9c18367f605f53580f12
train 4 Astronaut bc51f9a0eb205c7d51615bcc71d49d9e21b8cddb492085525acd5d15fa22f4a3
train 4 Building cc500953cdfe383540356056a2b5cf8460e30ee6c815f5689b33a403bb8694e8
train 4 ComicsCharacter 607f553f3327d52f3200bb45c532ea14295b95c7f3ee263952e8f537e040164f
train 4 Food d09a516eb12f9e918b208128883a70490c9c00ae353bc93e332c3d8d13bc95a7
train 4 Monument 8a101fbaac7064b86c6efa953a530737d14e8381a2747f2600cd640bbd33d9cb
train 4 SportsTeam c1c1870ab97402249405f3e754697d060fd9bb2fa0654d1fa06a7b50162ab4f8
train 4 University 32ee738e706086f147947469017c928893672bf07d5fc9165b8cfb295e0df26c
train 4 WrittenWork e315ca9cab5fa17baee7290f6b5892ebd8785309891f0ddbaa9b516b2f3f0940
train 5 Airport d51ebfa7f1087395016c3d71810fcc9ba46a2ec0e7d4ad2218ce82ffc06f24c4
train 5 Astronaut 9f7a4c0ff9b01532eb58982aec4d39c8432d8f1f301eb4b06c8cb93d988e573c
train 5 Building 855549851647bd6f0bbf71ae39f09e3503178725e87fbfb5b71151634dc2d815
train 5 ComicsCharacter b8c0c8b07a57d11cd56eb15ff59c632391bf6a83c23f7a9510012bda9df3ec97
train 5 Food 3b7928c106477ab087160a8c4cc6add30b3252110440c51f856e23fdd7b8952e
train 5 Monument 326e5f85bc39c1e51a6e084702b8dc06b1a6e9664b11aeb174afcd253305c4cf
train 5 SportsTeam 5ab12a09008403ba5260314be64a0f3d7a5c4e35ee34c80e4c2b3c225c250d21
train 5 University a60db97dcf6ba06b638c1b929c534a4fdf613eab0fe3cefbb73de090ccbaa423
train 5 WrittenWork 93e6c1ebc54e9c72af6a12c3e222cd92376cec6cbf3ee3401f8d953ff2c0729b
train 6 Astronaut cd94f27fe3f279c8fca04add2d147084698c290c9cf1d5d4c31c1edc059c88b3
train 6 Monument 9db9aa64374bf9edd2476f640b4b86ee75889c1291f6895d9b86154e1c46a649
train 6 University 298ae9cde5b66c05f832b830c980b3e2b3e300e7547e1219af2e08b0b8d7812f
train 7 Astronaut 278ef7856ebe368829788310717b87e9885be0eb0e4522b08018dff4054e6b6d
train 7 Monument 6c6c45a02e3212dfeffe682d42eb1dda3d351a5161f01e6cb1f807edca02f9b6
train 7 University f859a37d51c42cbb1bdbbdd176b713e2ba2a563d14fdd7bfd2fb4f393f0392c0
"""


def _webnlg_files() -> dict[str, str | tuple[str, ...] | None]:
    files: dict[str, str | tuple[str, ...] | None] = {}
    for row in _WEBNLG_TABLE.strip().splitlines():
        split, n, category, digest = row.split()
        stem = "1triple_allSolutions" if n == "1" else f"{n}triples"
        files[f"{split}/{n}triples/{stem}_{category}_{split}_challenge.xml"] = digest
    files["test/testdata_with_lex.xml"] = "43287905cbfe47697232d569ea6ff072d598282da2ea022bc435ca26b943cd93"
    files["test/testdata_unseen_with_lex.xml"] = "c6915ead1319b8e59aaff4708cafbc6a9d805069f4e70b674637a8012fc58de5"
    files["test/testdata_no_lex.xml"] = "8020aabab38bf70cffb3e5ff2ae9301c318ac39867f148d60a27bfd32a583757"
    return files


_WEBNLG_FILES = _webnlg_files()
_DART_NAMES = tuple(f"dart-v1.1.1-full-{split}.{ext}" for ext in ("json", "xml") for split in ("train", "dev", "test"))
_MNLI = Source("MNLI", {"MNLI.zip": _GLUE + "MNLI.zip"},
               {"train.tsv": None, "dev_matched.tsv": None, "dev_mismatched.tsv": None})

# Pinned digests of the official files. GLUE, SQuAD and the NLG datasets: SHA-256, verified on the copies in
# this project's data MANIFEST (GLUE's against the GLUE/PaddleNLP MD5 checksums); the LM corpora: their
# publishers' digests (comments below). None: not pinned yet.
SOURCES: dict[str, Source] = {
    "rte": Source("RTE", {"RTE.zip": _GLUE + "RTE.zip"}, {
        "train.tsv": "41e3a9b063433392343fad9e962cf2f58b681c78d8f71592f4186f0837246c5c",
        "dev.tsv": "80230dfa1347282e7b532b06a1004a76a710087541189bf874223ddf0e3819fb"}),
    "cola": Source("CoLA", {"CoLA.zip": _GLUE + "CoLA.zip"}, {
        "train.tsv": "cb368ebeb9f27d7ad03720d27ddc95687a311bdb100781a2fe59a5f5b1bc0624",
        "dev.tsv": "8c013e21dc39957cac37378d87bebe225b694a0d5fe13eded66c2856628833fd"}),
    "sst2": Source("SST-2", {"SST-2.zip": _GLUE + "SST-2.zip"}, {
        "train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
        "dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"}),
    "stsb": Source("STS-B", {"STS-B.zip": _GLUE + "STS-B.zip"}, {
        "train.tsv": "41c4d978b6162abdcada7e49a982211954cca5459c228db478af333124b257a2",
        "dev.tsv": "fe7dc0632a5033562f3cadff991f6e8d9b9b6311861660e78c3c82eb7db67f59"}),
    "mrpc": Source(
        "MRPC",
        {"msr_paraphrase_train.txt": "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",
         "dev_ids.tsv": _GLUE + "mrpc_dev_ids.tsv"},
        {"train.tsv": "69abcedee3cf738c6ce58d772e43e1b7cdf5b4edee4aceda459c0d9f4e5599f3",
         "dev.tsv": "9e8f284788040f7c9ecde2e1b3c07237c756f926bd9ef8548ef5d34b56f69f17"},
        build="mrpc",
        extra={"msr_paraphrase_train.txt": "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89",
               "dev_ids.tsv": "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7"}),
    "qqp": Source("QQP", {"QQP-clean.zip": _GLUE + "QQP-clean.zip"}, {"train.tsv": None, "dev.tsv": None}),
    "mnli": _MNLI,
    "mnli_mm": _MNLI,  # the same files: dev_mismatched.tsv is read by task mnli_mm
    "qnli": Source("QNLI", {"QNLIv2.zip": _GLUE + "QNLIv2.zip"}, {"train.tsv": None, "dev.tsv": None}),
    "squad": Source("", {"train-v1.1.json": _SQUAD + "train-v1.1.json", "dev-v1.1.json": _SQUAD + "dev-v1.1.json"},
                    {"train-v1.1.json": None,
                     "dev-v1.1.json": "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"}),
    "squad_v2": Source("", {"train-v2.0.json": _SQUAD + "train-v2.0.json", "dev-v2.0.json": _SQUAD + "dev-v2.0.json"},
                       {"train-v2.0.json": None, "dev-v2.0.json": None}),
    # train: simplified layout; dev: the original layout (5 annotations per example), read as is by task nq
    "nq": Source("nq", {name: _NQ + name for name in ("simplified-nq-train.jsonl.gz", "nq-dev-all.jsonl.gz")},
                 {"simplified-nq-train.jsonl.gz": None, "nq-dev-all.jsonl.gz": None}, partial=True),
    **{name: Source(folder, {f"{folder}.zip": f"{_SUPERGLUE}{folder}.zip"},
                    {"train.jsonl": None, "val.jsonl": None, "test.jsonl": None})
       for name, folder in (("boolq", "BoolQ"), ("cb", "CB"), ("copa", "COPA"), ("superglue_rte", "RTE"),
                            ("wic", "WiC"), ("wsc", "WSC"), ("multirc", "MultiRC"), ("record", "ReCoRD"))},
    # Language-model corpora (masked/causal LM tasks), pinned by the digests their publishers give. enwik8 and
    # enwik9: the SHA-1 on Matt Mahoney's textdata page (which also gives MD5 a1fa5ffd... / e206c345...).
    # text8 and WikiText-103: the SHA-1s GluonNLP's dataset classes check downloads against (its WikiText-2
    # SHA-1s equal those of this project's independent copy of wiki.valid/test.tokens, see the data MANIFEST).
    "enwik8": Source("enwik8", {"enwik8.zip": _HUTTER + "enwik8.zip"},
                     {"enwik8": "sha1:57b8363b814821dc9d47aa4d41f58733519076b2"}),
    "text8": Source("text8", {"text8.zip": _HUTTER + "text8.zip"},
                    {"text8": "sha1:0dc3edebc970dcc96137e7deda4d9995af9d93de"}),
    "hutter": Source("hutter", {"enwik9.zip": _HUTTER + "enwik9.zip"},
                     {"enwik9": "sha1:2996e86fb978f93cca8f566cc56998923e7fe581"}),
    # WikiText-2 (tasks wikitext, mlm_wikitext); with --from a folder may hold some splits only (e.g. valid and
    # test for lm-eval)
    "wikitext": Source("wikitext-2", {"wikitext-2-v1.zip": _WIKITEXT + "wikitext-2-v1.zip"},
                       {"wiki.train.tokens": "sha1:863f29c46ef9d167fff4940ec821195882fe29d1",
                        "wiki.valid.tokens": "sha1:0418625c8b4da6e4b5c7a0b9e78d4ae8f7ee5422",
                        "wiki.test.tokens": "sha1:c7b8ce0aa086fb34dab808c5c49224211eb2b172"}, partial=True),
    "wikitext103": Source("wikitext-103", {"wikitext-103-v1.zip": _WIKITEXT + "wikitext-103-v1.zip"},
                          {"wiki.train.tokens": "sha1:b7497e2dfe77e72cfef5e3dbc61b7b53712ac211",
                           "wiki.valid.tokens": "sha1:c326ac59dc587676d58c422eb8a03e119582f92b",
                           "wiki.test.tokens": "sha1:8a5befc548865cec54ed4273cf87dbbad60d1e47"}),
    # Tiny Shakespeare (task text: one input.txt, split by character fractions), from char-rnn at a fixed commit;
    # the digest was verified on the data MANIFEST's copy (1,115,394 characters)
    "shakespeare": Source("tinyshakespeare", {"input.txt": _SHAKESPEARE + "input.txt"},
                          {"input.txt": "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"}),
    # OpenWebText (WebText's open re-creation) in the text layout: lorakit.data.openwebtext reads the release
    # archive (or, with --from, the same documents in another format) and writes webtext/{train,valid,test}.txt.
    # The archive's SHA-256 is the one the Hugging Face datasets library checked its download against
    # (datasets/openwebtext/dataset_infos.json, 12,880,027,468 bytes).
    "openwebtext": Source(
        "webtext", {"openwebtext.tar.xz": _OWT + "openwebtext.tar.xz"}, {}, build="openwebtext",
        extra={"openwebtext.tar.xz": "9fe39d154c5bc67da8c359415372b79510eb1e2edb0d035fe4f7fc3a732b9336"}),
    "e2e": Source("e2e", {name: _E2E + name for name in ("trainset.csv", "devset.csv", "testset_w_refs.csv",
                                                          "testset.csv")},
                  {"trainset.csv": "f27d48df45815288ab15619d47a79028c300fbb7f42e373668aba0b98c1d57c6",
                   "devset.csv": "fc26b78cdb849c80545f513b223d1e051138b43882eeb79e3eb153e689c864f9",
                   "testset_w_refs.csv": "edc8db685e39bb9824d5bd70c18b1c9b0412d14b527aa960e2d1c8251ee15ccd",
                   "testset.csv": "9b90c8f88feae14d9e1ef37350b14d17294c5958e90a3f1a7846590ee97bdbb9"},
                  reader="e2e"),
    "webnlg": Source("webnlg_challenge_2017", {name: _WEBNLG + name for name in _WEBNLG_FILES}, _WEBNLG_FILES,
                     reader="webnlg"),
    # JSON is what LoRA used; dev: the 2020 release (LoRA's copy, LF) or the 2021 re-export (CRLF), same JSON.
    "dart": Source("dart", {name: _DART + name for name in _DART_NAMES if name.endswith(".json")},
                   {**dict.fromkeys(_DART_NAMES),
                    "dart-v1.1.1-full-dev.json": ("5038f3543b6d59b94ac4e3f69d15a0b01d8578913f862142e7c560200dd6e434",
                                                  "56606eac12baa7f0ddb81c61890f9f1a95bace4df8f8989852786358fe5d2b88"),
                    "dart-v1.1.1-full-test.xml": "4f6994d633030278798c114555549a13202780fe0d78ee2e7ac7dcce45a8e233"},
                   optional=tuple(n for n in _DART_NAMES if n.endswith(".xml")), partial=True, reader="dart"),
}


def _digests(path: Path, algorithms: set[str]) -> dict[str, str]:
    """The hex digests of ``path`` for each hashlib algorithm named, in one read."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            for h in hashers.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashers.items()}


def _split_digest(pinned: str) -> tuple[str, str]:
    """``"sha1:HEX"`` -> ``("sha1", hex)``; a bare hex string is a SHA-256. The hex is compared in lower case;
    an algorithm hashlib does not have, or a digest of the wrong length, is a PrepareError."""
    algorithm, _, hexdigest = pinned.rpartition(":")
    algorithm, hexdigest = algorithm.lower() or "sha256", hexdigest.lower()
    if algorithm not in hashlib.algorithms_available:
        raise PrepareError(f"pinned digest {pinned!r}: hashlib has no algorithm {algorithm!r}")
    if len(hexdigest) != 2 * hashlib.new(algorithm).digest_size or not set(hexdigest) <= set("0123456789abcdef"):
        raise PrepareError(f"pinned digest {pinned!r}: not a {algorithm} digest in hex")
    return algorithm, hexdigest


def _check(path: Path, expected: str | tuple[str, ...] | None, say) -> str:
    """Check ``path`` against its pinned digest (``expected``: a SHA-256 in hex, or ``"ALGORITHM:HEX"`` for
    another hashlib algorithm a publisher gives, e.g. ``"sha1:..."``; a tuple: any of them) and return its
    SHA-256, which the manifest records whatever was pinned. Without a pinned digest the file is not checked:
    a note says so."""
    accepted = (expected,) if isinstance(expected, str) else expected
    pins = [_split_digest(d) for d in accepted or ()]
    seen = _digests(path, {"sha256", *(algorithm for algorithm, _ in pins)})
    if accepted is None:
        say(f"note: {path.name}: no pinned checksum; sha256 {seen['sha256']} (not verified against a known digest; "
            f"recorded in {MANIFEST})")
    elif not any(seen[algorithm] == hexdigest for algorithm, hexdigest in pins):
        actual = ", ".join(f"{algorithm} {seen[algorithm]}" for algorithm in sorted(seen))
        raise PrepareError(f"{path}: checksum mismatch ({actual}; expected {' or '.join(accepted)}); the file is not "
                           "the official release (damaged download or another version); delete it and try again")
    return seen["sha256"]


def _write_manifest(out: Path, task: str, source: str, files: dict[str, dict]) -> None:
    """Record in ``out/lorakit-prepare.json`` each prepared (or read) file's SHA-256 and whether it was
    checked against a pinned digest; entries of earlier runs for other files (another task sharing the
    folder, e.g. SQuAD v1.1 and v2.0) stay."""
    path = out / MANIFEST
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("files", {}) if path.is_file() else {}
    except (OSError, ValueError, AttributeError):
        old = {}  # an unreadable manifest is rewritten
    when = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = {**old, **{name: {**info, "task": task, "source": source, "prepared": when}
                         for name, info in files.items()}}
    atomic_write(path, json.dumps({"written_by": "lorakit data prepare", "files": dict(sorted(entries.items()))},
                                  indent=1) + "\n")


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parsed = urlparse(url)
    try:
        port = parsed.port or (80 if parsed.scheme == "http" else 443)
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def _download(urls: dict[str, str], into: Path, say) -> None:
    first = next(iter(urls.values()))
    if not _reachable(first):
        host = urlparse(first).hostname
        listed = ", ".join(urls.values()) if len(urls) <= 4 else \
            f"the {len(urls)} files under {os.path.commonprefix(list(urls.values())).rsplit('/', 1)[0]}/"
        raise PrepareError(f"cannot reach {host} (offline?). On a machine with internet download "
                           f"{listed} and pass the folder or zip with --from PATH")
    for name, url in urls.items():
        say(f"downloading {url}")
        try:
            with _no_new_folders_on_failure((into / name).parent):
                (into / name).parent.mkdir(parents=True, exist_ok=True)
                with urllib.request.urlopen(urllib.request.Request(url, headers=_HEADERS), timeout=60) as resp:
                    atomic_write(into / name, lambda path, resp=resp, name=name: _save_stream(resp, path, name))
        except OSError as err:
            raise PrepareError(f"download of {url} failed: {err}; retry, or download it yourself and pass "
                               "--from") from err


# Some hosts (wikitext.smerity.com) answer Python's default "Python-urllib/3.x" agent with 403 Forbidden.
_HEADERS = {"User-Agent": f"lorakit/{_VERSION} (lorakit data prepare)"}


def _save_stream(stream, path: str, name: str) -> None:
    """Write a download to ``path`` with a progress bar (on a terminal) sized by its Content-Length."""
    from tqdm import tqdm

    total = int(stream.headers.get("Content-Length") or 0) or None
    with open(path, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=None) as bar:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            out.write(chunk)
            bar.update(len(chunk))


def _find(root: Path, name: str) -> Path | None:
    """``name`` (a relative path) under ``root``, directly or one folder down (a zip's top folder)."""
    for candidate in (root / name, *(p / name for p in sorted(root.iterdir()) if p.is_dir())):
        if candidate.is_file():
            return candidate
    return None


def _unpack(source: Path, into: Path) -> Path:
    """A folder as is; a zip extracted into ``into``."""
    if source.is_dir():
        return source
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            zf.extractall(into)
        return into
    raise PrepareError(f"--from {source}: neither a folder nor a zip file")


def _build_mrpc(train_txt: Path, dev_ids: Path, out: Path) -> None:
    """GLUE's rule (download_glue_data.py): rows of the MSR train file whose id pair is in the dev ids go
    to dev.tsv, the others to train.tsv; both keep the header line."""
    with open(dev_ids, encoding="utf-8") as fh:
        ids = {tuple(row.strip().split("\t")) for row in fh}
    with open(train_txt, encoding="utf-8") as data:
        header = data.readline()
        train, dev = [header], [header]
        for row in data:
            label, id1, id2, s1, s2 = row.strip().split("\t")
            (dev if (id1, id2) in ids else train).append(f"{label}\t{id1}\t{id2}\t{s1}\t{s2}\n")
    atomic_write(out / "train.tsv", "".join(train))
    atomic_write(out / "dev.tsv", "".join(dev))


def _check_readable(dataset: str, folder: Path, say, sources: dict[str, str]) -> None:
    """Read every split of an NLG dataset found in ``folder`` with the project's reader; PrepareError if one
    does not parse, naming the file it was copied from (``sources``: copied path -> original path)."""
    from lorakit.data.nlg import DataError, find_split_file, read_split

    for split in ("train", "dev", "test"):
        try:
            find_split_file(dataset, split, folder)
        except DataError:
            continue  # a split that is not there (DART from a partial folder)
        try:
            examples = read_split(dataset, split, folder)
        except DataError as err:
            message = str(err)
            for copied, original in sources.items():
                message = message.replace(copied, original)
            raise PrepareError(f"{dataset} {split}: the files do not read: {message}") from err
        say(f"{dataset} {split}: {len(examples)} inputs, {sum(len(e.references) for e in examples)} references")


def prepare(task: str, to: str | Path, source: str | Path | None = None, say=print, *,
            holdout: float | None = None, max_train_docs: int | None = None) -> Path:
    """Prepare ``task``'s files under ``to`` (from ``source`` when given, else downloaded); return the
    folder the task reads (``--data`` for it). ``holdout``, ``max_train_docs``: openwebtext only (see
    :func:`lorakit.data.openwebtext.write_splits`)."""
    key = task.lower().replace("-", "")
    if key not in SOURCES:
        raise PrepareError(f"unknown task {task!r}; known: {', '.join(SOURCES)}")
    spec = SOURCES[key]
    out = Path(to).expanduser() / spec.folder if spec.folder else Path(to).expanduser()
    if spec.build == "openwebtext":
        return _prepare_openwebtext(spec, Path(to).expanduser(), out, source, say, holdout, max_train_docs)
    if holdout is not None or max_train_docs is not None:
        raise PrepareError(f"--holdout and --max-train-docs apply to openwebtext only, not {task!r}")
    seen: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if source is None:
            _download(spec.urls, tmp, say)
            root = tmp
            for name in spec.urls:
                if name.endswith(".zip"):
                    with zipfile.ZipFile(tmp / name) as zf:
                        zf.extractall(tmp)
        else:
            src = Path(source).expanduser()
            if not src.exists():
                raise PrepareError(f"--from {src}: no such file or folder")
            root = _unpack(src, tmp)
            if spec.folder:  # a parent of the task folder, possibly inside an archive's top folder
                nested = [root / spec.folder, *(p / spec.folder for p in sorted(root.iterdir()) if p.is_dir())]
                root = next((p for p in nested if p.is_dir()), root)
        checked = _check_files(task, key, spec, root, source is not None, seen, say, tmp)
        if spec.reader:  # NLG datasets must also parse: read a staged copy before anything reaches `out`
            staged = tmp / "staged"
            _copy_into(checked, staged)
            _check_readable(spec.reader, staged, say, {str(staged / n): str(p) for n, p in checked.items()})
        with _no_new_folders_on_failure(out):
            _copy_into(checked, out)
    _write_manifest(out, key, str(source) if source is not None else "download", seen)
    say(f"{task}: ready in {out} (pass --data {out})")
    return out


def _check_files(task: str, key: str, spec: Source, root: Path, local: bool, seen: dict[str, dict], say,
                 scratch: Path) -> dict[str, Path]:
    """Find and check every file of the task under ``root`` (for MRPC, built in ``scratch`` first); record each
    digest seen in ``seen`` (name -> {"sha256", "pinned"}). Returns {name in the task folder: checked file}."""
    if spec.build == "mrpc" and not all(_find(root, n) for n in spec.files):
        inputs = {}
        for name, digest in spec.extra.items():
            found = _find(root, name)
            if found is None:
                raise PrepareError(f"MRPC: {name} not found under {root}; expected the MSR paraphrase train file "
                                   "and GLUE's dev ids (or train.tsv and dev.tsv)")
            _check(found, digest, say)
            inputs[name] = found
        root = scratch / "mrpc-built"
        root.mkdir()
        _build_mrpc(inputs["msr_paraphrase_train.txt"], inputs["dev_ids.tsv"], root)
    checked: dict[str, Path] = {}
    for name, digest in spec.files.items():
        found = _find(root, name)
        if found is None:
            optional = ((name.startswith("test") and not spec.reader) or name in spec.optional
                        or (local and (key.startswith("squad") or spec.partial)))
            if optional:  # SuperGLUE test files; a SQuAD or DART folder may hold some splits only
                say(f"note: {name} not found under {root}; skipped")
                continue
            expected = ", ".join(spec.files) if len(spec.files) <= 8 else f"{len(spec.files)} files"
            raise PrepareError(f"{name} not found under {root}; task {task!r} expects "
                               f"{expected}{f' in {spec.folder}/' if spec.folder else ''}")
        seen[name] = {"sha256": _check(found, digest, say), "pinned": digest is not None}
        checked[name] = found
    if spec.partial and not checked:
        raise PrepareError(f"none of {', '.join(spec.files)} found under {root}")
    return checked


def _copy_into(files: dict[str, Path], folder: Path) -> None:
    """Copy each checked file to ``folder / name`` (streamed, each written atomically)."""
    for name, found in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        if found.resolve() != (folder / name).resolve():
            atomic_write(folder / name, lambda tmp, found=found: shutil.copyfile(found, tmp))


@contextlib.contextmanager
def _no_new_folders_on_failure(path: Path) -> Iterator[None]:
    """When the block fails, the folders from ``path`` up that it created are removed again (if still empty)."""
    created = [p for p in (path, *path.parents) if not p.exists()]  # innermost first
    try:
        yield
    except BaseException:
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise


def _prepare_openwebtext(spec: Source, to: Path, out: Path, source: str | Path | None, say,
                         holdout: float | None, max_train_docs: int | None) -> Path:
    """OpenWebText: the release archive (downloaded into ``to/openwebtext-release``, kept) or ``source`` (a
    folder or one file) read by :mod:`lorakit.data.openwebtext` into ``out/{train,valid,test}.txt``. The
    release archive is checked against its pinned digest; other inputs (the Hugging Face shards, unpacked .xz
    archives, parquet files) have none: their digests are printed. All are recorded in the manifest, with the
    written files'."""
    from lorakit.data import openwebtext as owt

    if source is None:
        release = to / "openwebtext-release"
        missing = {name: url for name, url in spec.urls.items() if not (release / name).is_file()}
        if missing:
            _download(missing, release, say)  # checks the host first: offline, nothing is created
        say(f"openwebtext: the release archive is kept in {release} (--from {release} reuses it)")
        root = release
    else:
        root = Path(source).expanduser()
        if not root.exists():
            raise PrepareError(f"--from {root}: no such file or folder")
    seen: dict[str, dict] = {}

    def check(path: Path) -> None:
        say(f"openwebtext: reading {path}")
        name = path.name if path == root else str(path.relative_to(root))
        digest = spec.extra.get(path.name)  # the release archive's; None for the other formats
        seen[name] = {"sha256": _check(path, digest, say), "pinned": digest is not None}

    try:
        with _no_new_folders_on_failure(out):  # the split files appear together or not at all
            inputs = owt.find_inputs(root)
            out.mkdir(parents=True, exist_ok=True)
            written = owt.write_splits(inputs, out, owt.DEFAULT_HOLDOUT if holdout is None else holdout,
                                       max_train_docs, on_input=check)
    except owt.OpenWebTextError as err:
        raise PrepareError(str(err)) from None
    for split, info in written.items():
        seen[f"{split}.txt"] = {"sha256": info["sha256"], "pinned": False, "documents": info["documents"]}
        say(f"openwebtext {split}: {info['documents']:,} documents")
    _write_manifest(out, "openwebtext", str(source) if source is not None else _OWT, seen)
    say(f"openwebtext: ready in {out} (pass --data {out}; task text or mlm_text)")
    return out


def main(argv: list[str] | None = None) -> int:
    """``lorakit data prepare TASK --to DIR [--from PATH]``"""
    parser = argparse.ArgumentParser(prog="lorakit data", description="Prepare task data in the layout lorakit reads.")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("prepare", help="download (or take from --from) and check a task's files")
    p.add_argument("task", help=f"one of {', '.join(SOURCES)}")
    p.add_argument("--to", required=True, help="output folder (the task's subfolder is created in it)")
    p.add_argument("--from", dest="source", help="an already-downloaded folder or zip (no network needed); "
                   "openwebtext: openwebtext.tar.xz, or a folder of it, of the Hugging Face tar shards, of .xz "
                   "archives or of parquet files")
    p.add_argument("--holdout", type=float, default=None,
                   help="openwebtext: the fraction of documents for valid and for test each (default 0.0005)")
    p.add_argument("--max-train-docs", type=int, default=None,
                   help="openwebtext: stop reading once train.txt has this many documents (default: all)")
    args = parser.parse_args(argv)
    try:
        prepare(args.task, args.to, args.source, holdout=args.holdout, max_train_docs=args.max_train_docs)
    except PrepareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
