"""The sgg.h5 layout, checked with a reader written here independently of sgtool's own."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from sgtool.data.graphs import RelationSet, SceneGraphs
from sgtool.data.prepared import load_prepared
from sgtool.data.sgg_h5 import read_image_data, read_sgg_h5, write_sgg_h5
from sgtool.data.synth import prepare_synth
from sgtool.errors import SgtoolError
from sgtool.workspace import Workspace


def independent_read(path, widths, heights):
    """Per image: (labels, xyxy boxes, [(subj_local, obj_local, predicate)]) straight from the arrays."""
    with h5py.File(path, "r") as h5:
        arrays = {k: h5[k][()] for k in h5.keys()}
    images = []
    for i in range(len(arrays["split"])):
        fb, lb = arrays["img_to_first_box"][i], arrays["img_to_last_box"][i]
        fr, lr = arrays["img_to_first_rel"][i], arrays["img_to_last_rel"][i]
        labels = arrays["labels"][fb:lb + 1, 0] if fb >= 0 else np.zeros(0)
        raw = arrays["boxes_1024"][fb:lb + 1].astype(float) if fb >= 0 else np.zeros((0, 4))
        scale = max(widths[i], heights[i]) / 1024
        boxes = np.stack([raw[:, 0] - raw[:, 2] / 2, raw[:, 1] - raw[:, 3] / 2,
                          raw[:, 0] + raw[:, 2] / 2, raw[:, 1] + raw[:, 3] / 2], axis=1) * scale
        rels = []
        if fr >= 0:
            for r in range(fr, lr + 1):
                s, o = arrays["relationships"][r]
                assert fb <= s <= lb and fb <= o <= lb  # global rows inside the image
                rels.append((s - fb, o - fb, arrays["predicates"][r, 0]))
        images.append((labels, boxes, rels))
    return arrays, images


def test_written_dataset_reads_back_with_an_independent_reader(tmp_path):
    ws = Workspace(tmp_path)
    prepare_synth(ws, images=50, seed=5, workers=1)
    prepared = load_prepared(ws)
    g = prepared.graphs
    arrays, images = independent_read(prepared.path / "sgg.h5", g.widths, g.heights)
    assert arrays["labels"].shape[1] == 1 and arrays["labels"].min() >= 1
    assert arrays["predicates"].min() >= 1
    assert set(np.unique(arrays["split"])) == {0, 1, 2}
    assert arrays["boxes_1024"].dtype == np.int32
    assert np.all(arrays["boxes_1024"][:, 2:] > 0)
    for i, (labels, boxes, rels) in enumerate(images):
        mine = g.image(i)
        np.testing.assert_array_equal(labels, mine["labels"])
        np.testing.assert_allclose(boxes, mine["boxes"], atol=1e-4)
        assert rels == [tuple(int(v) for v in (*p, q)) for p, q in zip(mine["pairs"], mine["predicates"])]
    # the 128-px images map exactly onto the 1024 grid
    assert np.all(boxes == np.round(boxes))


def _tiny_graphs(with_empty_image=True):
    # image 0: two boxes one relation; image 1: no boxes; image 2: one box, no relation
    return SceneGraphs(
        image_ids=np.array([1, 2, 3]), widths=np.array([200, 50, 1024]), heights=np.array([100, 60, 512]),
        split=np.array([0, 2, 1], dtype=np.int8), box_offsets=np.array([0, 2, 2, 3]),
        boxes=np.array([[10, 10, 50, 60], [100, 20, 180, 90], [0, 0, 1024, 512]], dtype=np.float32),
        labels=np.array([3, 1, 2]),
        relations=RelationSet(np.array([[1, 0]]), np.array([4]), np.array([0, 1, 1, 1])),
    )


def test_empty_images_get_minus_one_offsets(tmp_path):
    graphs = _tiny_graphs()
    write_sgg_h5(tmp_path / "x.h5", graphs)
    with h5py.File(tmp_path / "x.h5", "r") as h5:
        assert h5["img_to_first_box"][()].tolist() == [0, -1, 2]
        assert h5["img_to_last_box"][()].tolist() == [1, -1, 2]
        assert h5["img_to_first_rel"][()].tolist() == [0, -1, -1]
        assert h5["img_to_last_rel"][()].tolist() == [0, -1, -1]
        assert h5["relationships"][()].tolist() == [[1, 0]]
        # [cx, cy, w, h] at longest side 1024: image 0 has max side 200
        assert h5["boxes_1024"][0].tolist() == [154, 179, 205, 256]
    back = read_sgg_h5(tmp_path / "x.h5", graphs.widths, graphs.heights)
    np.testing.assert_array_equal(back.box_offsets, graphs.box_offsets)
    np.testing.assert_allclose(back.boxes, graphs.boxes, atol=0.5)


def test_inconsistent_offsets_and_truncated_files_are_refused(tmp_path):
    graphs = _tiny_graphs()
    path = tmp_path / "x.h5"
    write_sgg_h5(path, graphs)
    with h5py.File(path, "a") as h5:
        h5["img_to_last_box"][0] = 2  # overlaps the next image's box
    with pytest.raises(SgtoolError, match="img_to_first_box"):
        read_sgg_h5(path, graphs.widths, graphs.heights)
    write_sgg_h5(path, graphs)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SgtoolError, match="cannot be read as HDF5"):
        read_sgg_h5(path, graphs.widths, graphs.heights)


def test_one_image_data_reader_for_prepared_and_community_files(tmp_path):
    path = tmp_path / "image_data.json"
    path.write_text('[{"image_id": 7, "width": 30, "height": 20, "file": "images/7.jpg"},'
                    ' {"id": 1592, "width": 8, "height": 8}, {"id": 9, "width": 40, "height": 10}]')
    ids, widths, heights, files = read_image_data(path, leave_out={1592})
    assert ids.tolist() == [7, 9] and widths.tolist() == [30, 40] and heights.tolist() == [20, 10]
    assert files == ["images/7.jpg", None]  # files stay aligned with the records kept
    assert read_image_data(path)[0].tolist() == [7, 1592, 9]
    path.write_text('[{"image_id": 7, "width": 30, "height": 20}, {"image_id": 8, "width": 0, "height": 5}]')
    with pytest.raises(SgtoolError, match="image 8 has a zero or negative size"):
        read_image_data(path)
    path.write_text('[{"image_id": 7, "height": 20}]')
    with pytest.raises(SgtoolError, match="without a valid image_id, width or height"):
        read_image_data(path)
