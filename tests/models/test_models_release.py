"""Release checkpoints (PointMAP / Mamba3D / Point-MAE key names) load into our models."""

import torch

import map3d
from map3d.layers import BiMamba
from map3d.models.release import convert_release_state_dict

C, K = 16, 8


def mini_pointnet(prefix):
    shapes = {
        "first_conv.0.weight": (128, 3, 1), "first_conv.0.bias": (128,),
        "first_conv.1.weight": (128,), "first_conv.1.bias": (128,),
        "first_conv.1.running_mean": (128,), "first_conv.1.running_var": (128,),
        "first_conv.1.num_batches_tracked": (),
        "first_conv.3.weight": (256, 128, 1), "first_conv.3.bias": (256,),
        "second_conv.0.weight": (512, 512, 1), "second_conv.0.bias": (512,),
        "second_conv.1.weight": (512,), "second_conv.1.bias": (512,),
        "second_conv.1.running_mean": (512,), "second_conv.1.running_var": (512,),
        "second_conv.1.num_batches_tracked": (),
        "second_conv.3.weight": (C, 512, 1), "second_conv.3.bias": (C,),
    }  # fmt: skip
    return {prefix + k: v for k, v in shapes.items()}


def mlp3(prefix):
    return {f"{prefix}0.weight": (128, 3), f"{prefix}0.bias": (128,),
            f"{prefix}2.weight": (C, 128), f"{prefix}2.bias": (C,)}  # fmt: skip


def vit_block(prefix):
    return {
        f"{prefix}norm1.weight": (C,), f"{prefix}norm1.bias": (C,),
        f"{prefix}attn.qkv.weight": (3 * C, C), f"{prefix}attn.proj.weight": (C, C),
        f"{prefix}attn.proj.bias": (C,), f"{prefix}norm2.weight": (C,), f"{prefix}norm2.bias": (C,),
        f"{prefix}mlp.fc1.weight": (4 * C, C), f"{prefix}mlp.fc1.bias": (4 * C,),
        f"{prefix}mlp.fc2.weight": (C, 4 * C), f"{prefix}mlp.fc2.bias": (C,),
    }  # fmt: skip


def lnp_block(prefix):
    return {
        f"{prefix}norm1.weight": (C,), f"{prefix}norm1.bias": (C,),
        f"{prefix}norm2.weight": (C,), f"{prefix}norm2.bias": (C,),
        f"{prefix}lfa.lga.affine_alpha_feat": (1, 1, 1, 2 * C),
        f"{prefix}lfa.lga.affine_beta_feat": (1, 1, 1, 2 * C),
        f"{prefix}lfa.pre_norm_ft.weight": (2 * C,), f"{prefix}lfa.pre_norm_ft.bias": (2 * C,),
        f"{prefix}lfa.mlp.share_mlp.weight": (C, 2 * C, 1), f"{prefix}lfa.mlp.share_mlp.bias": (C,),
    }  # fmt: skip


def mamba_block(prefix):
    mixer = {f"{prefix}mixer.{k}": tuple(v.shape) for k, v in BiMamba(C, 4).state_dict().items()}
    return {**lnp_block(prefix), **mixer}


def release_pretrain_state():
    shapes = {**mini_pointnet("MAE_encoder.encoder."), **mlp3("MAE_encoder.pos_embed.")}
    shapes["MAE_encoder.cls_token"] = shapes["MAE_encoder.cls_pos"] = (1, 1, C)
    for i in range(3):
        shapes.update(mamba_block(f"MAE_encoder.blocks.blocks.{i}."))
    shapes.update(lnp_block("MAE_encoder.blocks.blocks_vit.0."))
    shapes.update(vit_block("MAE_encoder.blocks.blocks_vit.0.mixer."))
    shapes.update({"MAE_encoder.norm.weight": (C,), "MAE_encoder.norm.bias": (C,)})
    shapes.update({"mask_token": (1, 1, C), **mlp3("decoder_pos_embed.")})
    for i in range(2):
        shapes.update(vit_block(f"MAE_decoder.blocks.{i}."))
    shapes.update({"MAE_decoder.norm.weight": (C,), "MAE_decoder.norm.bias": (C,)})
    shapes.update({"increase_dim.0.weight": (3 * K, C, 1), "increase_dim.0.bias": (3 * K,)})
    gen = torch.Generator().manual_seed(0)
    return {f"module.{k}": torch.randn(v, generator=gen) for k, v in shapes.items()}


def test_pretraining_checkpoint_maps_onto_the_pretrainer():
    release = release_pretrain_state()
    state, skipped = convert_release_state_dict({"base_model": release}, pattern="MMMT")
    assert sorted(skipped) == ["module.MAE_encoder.cls_pos", "module.MAE_encoder.cls_token"]
    model = map3d.create_model(
        "hybridmt3d_tiny", task="pretrain", dim=C, num_heads=2, d_state=4, decoder_depth=2,
        num_groups=16, group_size=K, num_regions=4, attention_block="release",
    )  # fmt: skip
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    lnp = model.encoder.backbone.blocks[3].local.lnp
    alpha = release["module.MAE_encoder.blocks.blocks_vit.0.lfa.lga.affine_alpha_feat"]
    assert torch.equal(lnp.affine_alpha, alpha.reshape(-1))
    mixer = model.encoder.backbone.blocks[1].mixer
    assert torch.equal(mixer.A_b_log, release["module.MAE_encoder.blocks.blocks.1.mixer.A_b_log"])
    model(torch.rand(2, 64, 3))


def test_finetuning_checkpoint_maps_onto_the_classifier():
    release = {
        k.removeprefix("module.MAE_encoder."): v
        for k, v in release_pretrain_state().items()
        if k.startswith("module.MAE_encoder.")
    }
    head = {"0.weight": (256, 2 * C), "0.bias": (256,), "1.weight": (256,), "1.bias": (256,),
            "1.running_mean": (256,), "1.running_var": (256,), "1.num_batches_tracked": (),
            "4.weight": (256, 256), "4.bias": (256,), "5.weight": (256,), "5.bias": (256,),
            "5.running_mean": (256,), "5.running_var": (256,), "5.num_batches_tracked": (),
            "8.weight": (15, 256), "8.bias": (15,)}  # fmt: skip
    release.update({f"cls_head_finetune.{k}": torch.zeros(v) for k, v in head.items()})
    state, skipped = convert_release_state_dict(release, pattern="MMMT")
    assert skipped == []
    model = map3d.create_model(
        "hybridmt3d_tiny", task="classify", dim=C, num_heads=2, d_state=4, num_classes=15,
        attention_block="release",
    )  # fmt: skip
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_point_mae_checkpoint_maps_onto_a_transformer_backbone():
    shapes = {**mini_pointnet("MAE_encoder.encoder."), **mlp3("MAE_encoder.pos_embed.")}
    for i in range(2):
        shapes.update(vit_block(f"MAE_encoder.blocks.blocks.{i}."))
    shapes.update({"MAE_encoder.norm.weight": (C,), "MAE_encoder.norm.bias": (C,)})
    state, skipped = convert_release_state_dict(
        {k: torch.zeros(v) for k, v in shapes.items()}, "TT"
    )
    assert skipped == []
    model = map3d.create_model("pointmae_tiny", task="classify", dim=C, num_heads=2)
    result = model.load_state_dict(state, strict=False)
    assert not [k for k in result.missing_keys if k.startswith("encoder.")]
    assert not result.unexpected_keys
