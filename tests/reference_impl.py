"""An independent, deliberately plain re-implementation of the official MetaFormer models, for tests only.

Written from the papers' description in the official layouts (PoolFormer v1: NCHW with ``network.*`` names;
baselines: NHWC with ``downsample_layers``/``stages`` names), so its ``state_dict()`` is an official-layout
checkpoint and its outputs are what the official code computes. It shares no code with mmmetaformer.
"""
import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = {'s12': [2, 2, 6, 2], 's24': [4, 4, 12, 4], 's36': [6, 6, 18, 6], 'm36': [6, 6, 18, 6],
          'm48': [8, 8, 24, 8], 's18': [3, 3, 9, 3], 'b36': [3, 12, 18, 3]}
WIDTHS = {'s12': [64, 128, 320, 512], 's24': [64, 128, 320, 512], 's36': [64, 128, 320, 512],
          'm36': [96, 192, 384, 768], 'm48': [96, 192, 384, 768]}
CONV_DEPTHS = {'s18': [3, 3, 9, 3], 's36': [3, 12, 18, 3], 'm36': [3, 12, 18, 3], 'b36': [3, 12, 18, 3]}
CONV_WIDTHS = {'s18': [64, 128, 320, 512], 's36': [64, 128, 320, 512], 'm36': [96, 192, 384, 576],
               'b36': [128, 256, 512, 768]}


# ----------------------------------------------------------------------------------------- PoolFormer v1 (NCHW)
class V1Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, 4 * dim, 1)
        self.fc2 = nn.Conv2d(4 * dim, dim, 1)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class V1Block(nn.Module):
    def __init__(self, dim, ls):
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = V1Mlp(dim)
        self.layer_scale_1 = nn.Parameter(ls * torch.ones(dim))
        self.layer_scale_2 = nn.Parameter(ls * torch.ones(dim))

    def forward(self, x):
        y = self.norm1(x)
        mixed = F.avg_pool2d(y, 3, 1, 1, count_include_pad=False) - y
        x = x + self.layer_scale_1[:, None, None] * mixed
        return x + self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x))


class V1Embed(nn.Module):
    def __init__(self, cin, cout, k, s, p):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, k, s, p)

    def forward(self, x):
        return self.proj(x)


class RefPoolFormer(nn.Module):
    def __init__(self, arch, num_classes=1000):
        super().__init__()
        depths, dims = DEPTHS[arch], WIDTHS[arch]
        ls = 1e-5 if arch in ('s12', 's24') else 1e-6
        self.patch_embed = V1Embed(3, dims[0], 7, 4, 2)
        network = []
        for i in range(4):
            network.append(nn.Sequential(*[V1Block(dims[i], ls) for _ in range(depths[i])]))
            if i < 3:
                network.append(V1Embed(dims[i], dims[i + 1], 3, 2, 1))
        self.network = nn.ModuleList(network)
        self.norm = nn.GroupNorm(1, dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def stage_outputs(self, x):
        x = self.patch_embed(x)
        outs = []
        for index, layer in enumerate(self.network):
            x = layer(x)
            if index % 2 == 0:
                outs.append(x)
        return outs

    def forward(self, x):
        x = self.norm(self.stage_outputs(x)[-1])
        return self.head(x.mean([-2, -1]))


# ----------------------------------------------------------------------------------------- baselines (NHWC)
class RefLayerNorm(nn.Module):
    """Normalize over ``dims`` of an NHWC tensor; per-channel weight, optional bias."""

    def __init__(self, dim, dims=(-1, ), bias=False, eps=1e-6):
        super().__init__()
        self.dims, self.eps = dims, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        centered = x - x.mean(self.dims, keepdim=True)
        var = centered.pow(2).mean(self.dims, keepdim=True)
        x = centered / torch.sqrt(var + self.eps) * self.weight
        return x + self.bias if self.bias is not None else x


class RefStarReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.scale * F.relu(x) ** 2 + self.bias


class RefScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.scale


class RefSepConv(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.pwconv1 = nn.Linear(dim, 2 * dim, bias=False)
        self.act1 = RefStarReLU()
        self.dwconv = nn.Conv2d(2 * dim, 2 * dim, 7, padding=3, groups=2 * dim, bias=False)
        self.pwconv2 = nn.Linear(2 * dim, dim, bias=False)

    def forward(self, x):
        x = self.act1(self.pwconv1(x))
        return self.pwconv2(self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class RefAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.heads = dim // 32
        self.qkv = nn.Linear(dim, 3 * self.heads * 32, bias=False)
        self.proj = nn.Linear(self.heads * 32, dim, bias=False)

    def forward(self, x):
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.heads, 32).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / 32 ** 0.5).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, h, w, self.heads * 32))


class RefRandom(nn.Module):
    def __init__(self, tokens):
        super().__init__()
        self.random_matrix = nn.Parameter(torch.softmax(torch.rand(tokens, tokens), -1), requires_grad=False)

    def forward(self, x):
        b, h, w, c = x.shape
        return torch.einsum('mn,bnc->bmc', self.random_matrix, x.reshape(b, h * w, c)).reshape(b, h, w, c)


class RefPool(nn.Module):
    def forward(self, x):
        y = x.permute(0, 3, 1, 2)
        return (F.avg_pool2d(y, 3, 1, 1, count_include_pad=False) - y).permute(0, 2, 3, 1)


class RefMlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim, bias=False)
        self.act = RefStarReLU()
        self.fc2 = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RefBlock(nn.Module):
    def __init__(self, dim, mixer, norm, res_scale):
        super().__init__()
        self.norm1 = norm(dim)
        self.token_mixer = mixer
        self.norm2 = norm(dim)
        self.mlp = RefMlp(dim)
        if res_scale:
            self.res_scale1 = RefScale(dim)
            self.res_scale2 = RefScale(dim)
        self.res_scale = res_scale

    def forward(self, x):
        r1 = self.res_scale1(x) if self.res_scale else x
        x = r1 + self.token_mixer(self.norm1(x))
        r2 = self.res_scale2(x) if self.res_scale else x
        return r2 + self.mlp(self.norm2(x))


class RefDown(nn.Module):
    def __init__(self, cin, cout, first):
        super().__init__()
        self.first = first
        if first:
            self.conv = nn.Conv2d(cin, cout, 7, 4, 2)
            self.post_norm = RefLayerNorm(cout)
        else:
            self.pre_norm = RefLayerNorm(cin)
            self.conv = nn.Conv2d(cin, cout, 3, 2, 1)

    def forward(self, x):
        if self.first:
            return self.post_norm(self.conv(x).permute(0, 2, 3, 1))
        return self.conv(self.pre_norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class RefMlpHead(nn.Module):
    def __init__(self, dim, num_classes):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.norm = nn.LayerNorm(4 * dim)
        self.fc2 = nn.Linear(4 * dim, num_classes)

    def forward(self, x):
        return self.fc2(self.norm(F.relu(self.fc1(x)) ** 2))


class RefBaseline(nn.Module):
    def __init__(self, family, arch, num_classes=1000):
        super().__init__()
        conv = family in ('convformer', 'caformer')
        depths = CONV_DEPTHS[arch] if conv else DEPTHS[arch]
        dims = CONV_WIDTHS[arch] if conv else WIDTHS[arch]
        if conv:
            norm = RefLayerNorm
        else:
            def norm(dim):
                return RefLayerNorm(dim, dims=(1, 2, 3))

        def mixer(stage, dim):
            if family == 'identityformer' or (family == 'randformer' and stage < 2):
                return nn.Identity()
            if family == 'randformer':
                return RefRandom(196 if stage == 2 else 49)
            if family == 'poolformerv2':
                return RefPool()
            if family == 'caformer' and stage >= 2:
                return RefAttention(dim)
            return RefSepConv(dim)

        self.downsample_layers = nn.ModuleList(
            [RefDown(3 if i == 0 else dims[i - 1], dims[i], i == 0) for i in range(4)])
        self.stages = nn.ModuleList([
            nn.Sequential(*[RefBlock(dims[i], mixer(i, dims[i]), norm, i >= 2) for _ in range(depths[i])])
            for i in range(4)])
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = RefMlpHead(dims[-1], num_classes) if conv else nn.Linear(dims[-1], num_classes)

    def stage_outputs(self, x):
        outs = []
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
            outs.append(x.permute(0, 3, 1, 2))
        return outs

    def forward(self, x):
        x = self.stage_outputs(x)[-1]
        return self.head(self.norm(x.mean([2, 3])))


def build_reference(name: str, num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """``name`` like 'caformer_s18'. Every parameter is randomized (not only the init values) so that a
    wrongly mapped scale, bias or norm weight changes the outputs."""
    family, arch = name.split('_')
    torch.manual_seed(seed)
    model = RefPoolFormer(arch, num_classes) if family == 'poolformer' else RefBaseline(family, arch, num_classes)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if 'random_matrix' in key:
                continue
            if param.dim() == 1:
                param.copy_(1.0 + 0.2 * torch.randn_like(param) if ('weight' in key or 'scale' in key)
                            else 0.1 * torch.randn_like(param))
            else:
                param.normal_(0, (1.0 / param[0].numel()) ** 0.5)
    return model.eval()
