"""Box -> token mask against grids computed by hand (64x64 input, 16 px patches: a 4x4 grid)."""
import numpy as np
import pytest

from stages.pretrain.token_mask import token_mask


def grid(box, crop=(0, 0, 1, 1), flip=False, size=64, frames=2, tubelet=2):
    mask = token_mask(box, size, 16, frames, tubelet, crop=crop, flip=flip)
    h, w = (size, size) if isinstance(size, int) else size
    return mask.reshape(frames // tubelet, h // 16, w // 16)


def cells(rows, cols, shape=(4, 4)):
    out = np.zeros(shape, bool)
    out[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1] = True
    return out


def test_any_overlap_rule():
    # x 12.8..38.4 px -> columns 0..2; y 19.2..35.2 px -> rows 1..2
    assert np.array_equal(grid((0.2, 0.3, 0.6, 0.55))[0], cells((1, 2), (0, 2)))


def test_edges_on_patch_borders_take_no_extra_patch():
    # x, y 16..32 px exactly: only patch (1, 1), not its right/lower neighbours (reference bug B5 is the other way)
    assert np.array_equal(grid((0.25, 0.25, 0.5, 0.5))[0], cells((1, 1), (1, 1)))


def test_flip_mirrors_columns():
    # flipped x: 1 - 0.6 .. 1 - 0.2 = 25.6..51.2 px -> columns 1..3; rows unchanged
    assert np.array_equal(grid((0.2, 0.3, 0.6, 0.55), flip=True)[0], cells((1, 2), (1, 3)))


def test_crop_that_cuts_the_box():
    # right half of the frame: box x 0.25..0.75 -> -0.5..0.5 of the crop -> 0..32 px -> columns 0..1
    assert np.array_equal(grid((0.25, 0.25, 0.75, 0.75), crop=(0.5, 0, 1, 1))[0], cells((1, 2), (0, 1)))
    # then flipped: 32..64 px -> columns 2..3
    assert np.array_equal(grid((0.25, 0.25, 0.75, 0.75), crop=(0.5, 0, 1, 1), flip=True)[0], cells((1, 2), (2, 3)))
    # a zoomed crop (0.2..0.6 both ways): box 0.3..0.4 -> 0.25..0.5 of the crop -> 16..32 px -> patch (1, 1)
    assert np.array_equal(grid((0.3, 0.3, 0.4, 0.4), crop=(0.2, 0.2, 0.6, 0.6))[0], cells((1, 1), (1, 1)))


@pytest.mark.parametrize("box, crop", [(None, (0, 0, 1, 1)), ((0.3, 0.3, 0.3, 0.6), (0, 0, 1, 1)),
                                       ((0.0, 0.0, 0.4, 0.4), (0.5, 0.5, 1, 1))])
def test_empty_box_selects_every_token(box, crop):
    assert grid(box, crop=crop).all()


def test_time_slices_and_non_square_input():
    # 32x64 input: 2x4 grid; 8 frames / tubelet 2 = 4 identical slices in (time, row, column) order
    mask = grid((0.5, 0.5, 1.0, 1.0), size=(32, 64), frames=8)
    assert mask.shape == (4, 2, 4)
    assert all(np.array_equal(m, cells((1, 1), (2, 3), (2, 4))) for m in mask)
    assert token_mask((0.5, 0.5, 1, 1), (32, 64), 16, 8, 2).tolist() == mask.reshape(-1).tolist()


def test_bad_sizes_name_the_values():
    with pytest.raises(ValueError, match="input_size 60x60 is not a multiple of patch_size 16"):
        token_mask((0, 0, 1, 1), 60, 16, 2, 2)
    with pytest.raises(ValueError, match="num_frames 3 is not a multiple of tubelet_size 2"):
        token_mask((0, 0, 1, 1), 64, 16, 3, 2)
    with pytest.raises(ValueError, match="crop"):
        token_mask((0, 0, 1, 1), 64, 16, 2, 2, crop=(0.5, 0, 0.5, 1))
