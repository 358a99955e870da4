"""Where each task's files come from for ``lorakit data prepare`` (:mod:`lorakit.data.prepare`): the
canonical URLs, the files a task needs, and their pinned digests (the registry ``SOURCES``, data only; the
mechanism that downloads, checks and copies is in ``prepare``)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["OPENWEBTEXT_BASE", "SOURCES", "Source"]


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
OPENWEBTEXT_BASE = "https://zenodo.org/records/3834942/files/"
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
        "webtext", {"openwebtext.tar.xz": OPENWEBTEXT_BASE + "openwebtext.tar.xz"}, {}, build="openwebtext",
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
