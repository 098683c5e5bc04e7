"""The two-tower model: user histories as CSR bags and the id / history / history+id towers."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gamerec_assets.core.model import USER_TOWERS, TwoTower, UserHistory

# Users 0-3; user 3 owns nothing. After a stable sort by user:
# user 0 -> [11, 14], user 1 -> [13], user 2 -> [10, 12], user 3 -> [].
PAIR_USERS = np.array([2, 0, 2, 1, 0])
PAIR_ITEMS = np.array([10, 11, 12, 13, 14])
PAIR_WEIGHTS = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # user 0 -> [2, 5], 1 -> [4], 2 -> [1, 3]


def _model(user_tower="history", normalize=False, n_users=4, n_items=6, embed_dim=3, seed=0, mlp=0):
    torch.manual_seed(seed)
    model = TwoTower(n_users, n_items, embed_dim, user_tower, normalize, mlp)
    with torch.no_grad():  # larger than the std=0.02 init so differences are far above float noise
        for parameter in model.parameters():
            parameter.normal_()
    return model


# Items 0-5 of a 6-item model: user 0 -> [1, 4], user 1 -> [3], user 2 -> [0, 2, 5], user 3 -> [].
HIST_USERS = np.array([2, 0, 2, 1, 0, 2])
HIST_ITEMS = np.array([0, 1, 2, 3, 4, 5])
HIST_WEIGHTS = np.array([0.5, 2.0, 1.5, 3.0, 1.0, 4.0])
OWNED = {0: [1, 4], 1: [3], 2: [0, 2, 5], 3: []}
OWNED_WEIGHTS = {0: [2.0, 1.0], 1: [3.0], 2: [0.5, 1.5, 4.0], 3: []}


def _history(weighted=False):
    return UserHistory.from_pairs(HIST_USERS, HIST_ITEMS, 4, HIST_WEIGHTS if weighted else None)


def _mean(table, items, weights=None):
    rows = table[torch.tensor(items, dtype=torch.long)]
    if weights is None:
        return rows.mean(dim=0)
    w = torch.tensor(weights, dtype=torch.float32)
    return (rows * w[:, None]).sum(dim=0) / w.sum()


# --- UserHistory ---------------------------------------------------------------------------------


def test_from_pairs_builds_csr_in_stable_user_order():
    history = UserHistory.from_pairs(PAIR_USERS, PAIR_ITEMS, n_users=4)
    assert history.n_users == 4
    assert history.indptr.tolist() == [0, 2, 3, 5, 5]
    assert history.items.tolist() == [11, 14, 13, 10, 12]
    assert history.weights is None
    assert history.indptr.dtype == torch.int64 and history.items.dtype == torch.int64


def test_bags_unweighted_returns_each_users_items_and_offsets():
    history = UserHistory.from_pairs(PAIR_USERS, PAIR_ITEMS, n_users=4)
    bags = history.bags(torch.tensor([2, 3, 0, 1]))
    assert bags.items.tolist() == [10, 12, 11, 14, 13]
    assert bags.offsets.tolist() == [0, 2, 2, 4]
    assert bags.weights is None and bags.n_bags == 4


def test_bags_weighted_returns_weights_in_item_order():
    history = UserHistory.from_pairs(PAIR_USERS, PAIR_ITEMS, n_users=4, weights=PAIR_WEIGHTS)
    assert history.weights.tolist() == [2.0, 5.0, 4.0, 1.0, 3.0]
    bags = history.bags(torch.tensor([0, 3, 2]))
    assert bags.items.tolist() == [11, 14, 10, 12]
    assert bags.offsets.tolist() == [0, 2, 2]
    assert bags.weights.tolist() == [2.0, 5.0, 1.0, 3.0]


def test_bags_accepts_torch_weights_and_repeated_users():
    history = UserHistory.from_pairs(
        PAIR_USERS, PAIR_ITEMS, n_users=4, weights=torch.tensor(PAIR_WEIGHTS)
    )
    bags = history.bags(torch.tensor([1, 1, 2]))
    assert bags.items.tolist() == [13, 13, 10, 12]
    assert bags.offsets.tolist() == [0, 1, 2]
    assert bags.weights.tolist() == [4.0, 4.0, 1.0, 3.0]


def test_bags_of_users_without_items_are_empty():
    history = UserHistory.from_pairs(np.array([1, 1]), np.array([5, 6]), n_users=3)
    bags = history.bags(torch.tensor([0, 2]))
    assert bags.items.tolist() == [] and bags.offsets.tolist() == [0, 0]


def test_from_item_lists():
    history = UserHistory.from_item_lists([[3, 1], [], [2]])
    assert history.n_users == 3
    assert history.indptr.tolist() == [0, 2, 2, 3]
    assert history.items.tolist() == [3, 1, 2]
    assert history.items.dtype == torch.int64 and history.weights is None
    bags = history.bags(torch.tensor([2, 1, 0]))
    assert bags.items.tolist() == [2, 3, 1] and bags.offsets.tolist() == [0, 1, 1]


@pytest.mark.parametrize("lists", [[], [[], []]], ids=["no-users", "only-empty"])
def test_from_item_lists_without_items(lists):
    history = UserHistory.from_item_lists(lists)
    assert history.n_users == len(lists)
    assert history.items.dtype == torch.int64 and history.items.numel() == 0
    assert history.indptr.tolist() == [0] * (len(lists) + 1)


# --- the training bags: a pair's other games, sampled when there are many ------------------------


def test_pair_positions_say_where_each_pair_sits():
    history = UserHistory.from_pairs(PAIR_USERS, PAIR_ITEMS, n_users=4)
    positions = history.pair_positions.tolist()
    assert [history.items[p].item() for p in positions] == PAIR_ITEMS.tolist()


@pytest.mark.parametrize("max_items", [0, 2, 50])
def test_short_histories_give_every_other_game_of_the_pair(max_items):
    history = _history(weighted=True)  # pair rows: (2,0) (0,1) (2,2) (1,3) (0,4) (2,5)
    bags = history.sample_bags(torch.tensor([5, 1, 0, 3]), max_items, torch.rand(4, 50)[:, :2])
    assert bags.offsets.tolist() == [0, 2, 3, 5]
    assert bags.items.tolist() == [0, 2, 4, 2, 5]  # user 1's only game is its pair: empty
    assert bags.weights.tolist() == [0.5, 1.5, 1.0, 1.5, 4.0]


def long_histories(n_users: int = 3, length: int = 40) -> UserHistory:
    users = np.repeat(np.arange(n_users), length)
    items = np.tile(np.arange(length), n_users) + 100 * users
    return UserHistory.from_pairs(users, items, n_users)


def test_long_histories_are_sampled_to_the_cap_never_with_the_pairs_own_game():
    history = long_histories()
    pairs = torch.arange(120)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        bags = history.sample_bags(pairs, 7, torch.rand(120, 7, generator=generator))
        assert bags.offsets.tolist() == list(range(0, 7 * 120, 7))  # at most 7 games a pair
        own = history.items[history.pair_positions]
        members = bags.items.view(120, 7)
        assert not (members == own[:, None]).any()  # the pair's own game is never pooled
        users = torch.arange(120) // 40
        assert ((members // 100) == users[:, None]).all()  # only the pair's user's games


def test_history_dropout_keeps_each_bag_first_game_and_drops_at_its_rate():
    history = long_histories(n_users=2, length=41)  # 40 other games per pair, all kept
    pairs = torch.arange(82)
    generator = torch.Generator().manual_seed(0)
    full = history.sample_bags(pairs, 0, None)
    kept = 0
    for _ in range(50):
        drops = torch.rand(82, 40, generator=generator)
        bags = history.sample_bags(pairs, 0, None, 0.25, drops)
        ends = torch.cat([bags.offsets[1:], torch.tensor([len(bags.items)])])
        counts = ends - bags.offsets
        assert (counts >= 1).all()  # never an empty bag
        assert torch.equal(bags.items[bags.offsets], full.items[full.offsets])  # first kept
        for b in (0, 81):
            bag = set(bags.items[bags.offsets[b] : ends[b]].tolist())
            assert bag <= set(full.items[full.offsets[b] : full.offsets[b] + 40].tolist())
        kept += len(bags.items)
    share_kept = (kept / 50 - 82) / (82 * 39)  # of the games that may be dropped
    assert share_kept == pytest.approx(0.75, abs=0.01)
    assert torch.equal(history.sample_bags(pairs, 0, None, 0.0, drops).items, full.items)


def test_sampling_is_seeded_and_uniform_over_the_other_games():
    history = long_histories(n_users=1, length=21)  # 20 other games per pair, 5 drawn
    pair = torch.tensor([3])
    first = history.sample_bags(
        pair, 5, torch.rand(1, 5, generator=torch.Generator().manual_seed(1))
    )
    again = history.sample_bags(
        pair, 5, torch.rand(1, 5, generator=torch.Generator().manual_seed(1))
    )
    other = history.sample_bags(
        pair, 5, torch.rand(1, 5, generator=torch.Generator().manual_seed(2))
    )
    assert torch.equal(first.items, again.items) and not torch.equal(first.items, other.items)
    generator = torch.Generator().manual_seed(0)
    counts = torch.zeros(21)
    for _ in range(4000):
        bags = history.sample_bags(pair, 5, torch.rand(1, 5, generator=generator))
        counts.index_add_(0, bags.items, torch.ones(5))
        assert len(set(bags.items.tolist())) == 5  # stratified: no game twice
    assert counts[3] == 0
    share = counts[torch.arange(21) != 3] / 4000
    assert torch.allclose(share, torch.full((20,), 5 / 20), atol=0.03)  # each game 1 in 4


# --- history tower -------------------------------------------------------------------------------


def encode(model, users, history, **kwargs):
    return model.encode_users(users, history.bags(users), **kwargs)


def test_history_tower_is_mean_of_owned_history_rows():
    model = _model()
    table = model.history_embedding.weight.detach()
    vectors = encode(model, torch.tensor([0, 1, 2]), _history())
    for row, user in enumerate([0, 1, 2]):
        assert torch.allclose(vectors[row], _mean(table, OWNED[user]), atol=1e-6), user
    # the item tower's table is not the one pooled
    assert not torch.allclose(
        vectors[0], _mean(model.item_embedding.weight.detach(), OWNED[0]), atol=1e-3
    )


def test_history_tower_user_without_items_is_zero():
    model = _model()
    vector = encode(model, torch.tensor([3]), _history())
    assert torch.equal(vector, torch.zeros(1, 3))


def test_training_bags_give_the_mean_of_the_pairs_other_games():
    model = _model()
    table = model.history_embedding.weight.detach()
    pairs = torch.tensor([5, 1, 0])  # (2,5) (0,1) (2,0)
    users = torch.tensor([2, 0, 2])
    vectors = model.encode_users(users, _history().sample_bags(pairs, 50, None))
    assert torch.allclose(vectors[0], _mean(table, [0, 2]), atol=1e-6)
    assert torch.allclose(vectors[1], _mean(table, [4]), atol=1e-6)
    assert torch.allclose(vectors[2], _mean(table, [2, 5]), atol=1e-6)


def test_weighted_history_is_weighted_mean():
    model = _model()
    table = model.history_embedding.weight.detach()
    vectors = encode(model, torch.tensor([0, 1, 2, 3]), _history(weighted=True))
    for user in range(3):
        expected = _mean(table, OWNED[user], OWNED_WEIGHTS[user])
        assert torch.allclose(vectors[user], expected, atol=1e-6), user
    assert torch.equal(vectors[3], torch.zeros(3))
    # the weights matter: user 2's weighted mean is not the plain mean
    assert not torch.allclose(vectors[2], _mean(table, OWNED[2]), atol=1e-3)


def test_weighted_training_bags_leave_exactly_the_pairs_own_game_out():
    model = _model()
    table = model.history_embedding.weight.detach()
    pairs, users = torch.tensor([5, 0, 4]), torch.tensor([2, 2, 0])
    vectors = model.encode_users(users, _history(weighted=True).sample_bags(pairs, 50, None))
    assert torch.allclose(vectors[0], _mean(table, [0, 2], [0.5, 1.5]), atol=1e-5)
    assert torch.allclose(vectors[1], _mean(table, [2, 5], [1.5, 4.0]), atol=1e-5)
    assert torch.allclose(vectors[2], _mean(table, [1], [2.0]), atol=1e-5)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_user_whose_only_game_is_the_pairs_gets_zero_vector(weighted, normalize):
    model = _model(normalize=normalize)
    bags = _history(weighted=weighted).sample_bags(torch.tensor([3]), 50, None)
    vector = model.encode_users(torch.tensor([1]), bags)
    assert not torch.isnan(vector).any()
    assert torch.allclose(vector, torch.zeros(1, 3), atol=1e-6)


def test_history_mlp_starts_as_the_mean_and_adds_a_residual_of_it():
    plain, with_mlp = _model(), _model(mlp=5)  # same seed: the same tables
    with_mlp.history_embedding.weight.data.copy_(plain.history_embedding.weight.data)
    users = torch.tensor([0, 1, 2, 3])
    means = encode(plain, users, _history())
    torch.nn.init.zeros_(with_mlp.history_layers[2].weight)  # as a new model starts
    torch.nn.init.zeros_(with_mlp.history_layers[2].bias)
    assert torch.equal(encode(with_mlp, users, _history()), means)
    torch.nn.init.normal_(with_mlp.history_layers[2].weight)  # as training leaves it
    torch.nn.init.normal_(with_mlp.history_layers[2].bias)
    first, _, second = with_mlp.history_layers
    expected = means + second(torch.relu(first(means)))
    found = encode(with_mlp, users, _history())
    torch.testing.assert_close(found[:3], expected[:3].detach())
    assert not torch.allclose(found[:3], means[:3], atol=1e-3)
    assert torch.equal(found[3], torch.zeros(3))  # user 3 owns nothing: still zero
    assert _model(user_tower="id", mlp=5).history_mlp == 0  # no history, no MLP


def test_history_tower_without_history_raises():
    model = _model()
    with pytest.raises(ValueError, match="'history' user tower needs the users' histories"):
        model.encode_users(torch.tensor([0]))
    with pytest.raises(ValueError, match="histories"):
        model(torch.tensor([0]), torch.tensor([1]))


# --- normalize and forward -----------------------------------------------------------------------


@pytest.mark.parametrize("user_tower", USER_TOWERS)
def test_normalized_vectors_have_unit_norm(user_tower):
    model = _model(user_tower=user_tower, normalize=True)
    history = _history()
    users = model.user_vectors(history)
    norms = users.norm(dim=1)
    if user_tower == "history":  # user 3 owns nothing: a zero vector, left at zero
        assert torch.allclose(norms[:3], torch.ones(3), atol=1e-5)
        assert torch.equal(users[3], torch.zeros(3))
    else:
        assert torch.allclose(norms, torch.ones(4), atol=1e-5)
    assert torch.allclose(model.item_vectors().norm(dim=1), torch.ones(6), atol=1e-5)
    unnormalized = _model(user_tower=user_tower, normalize=False)  # same seed, same weights
    assert not torch.allclose(unnormalized.item_vectors().norm(dim=1), torch.ones(6), atol=1e-2)


@pytest.mark.parametrize("user_tower", ["history", "history+id"])
@pytest.mark.parametrize("normalize", [False, True])
def test_forward_scores_users_without_their_own_item(user_tower, normalize):
    model = _model(user_tower=user_tower, normalize=normalize)
    history = _history()
    pairs = torch.tensor([4, 0, 5, 3])
    users, items = torch.tensor([0, 2, 2, 1]), torch.tensor([4, 0, 5, 3])
    bags = history.sample_bags(pairs, 50, None)
    logits = model(users, items, bags)
    expected = model.encode_users(users, bags) @ model.encode_items(items).T
    assert logits.shape == (4, 4)
    assert torch.allclose(logits, expected, atol=1e-6)
    # leaving the pair's game out matters: scoring with the full history gives other numbers
    full = encode(model, users, history) @ model.encode_items(items).T
    assert not torch.allclose(logits, full, atol=1e-3)


# --- history+id and fold-in ----------------------------------------------------------------------


def test_history_plus_id_sums_both_parts():
    model = _model(user_tower="history+id")
    table = model.history_embedding.weight.detach()
    ids = model.user_embedding.weight.detach()
    users = torch.tensor([0, 2, 3])
    both = encode(model, users, _history())
    history_only = encode(model, users, _history(), include_user_id=False)
    for row, user in enumerate([0, 2]):
        mean = _mean(table, OWNED[user])
        assert torch.allclose(both[row], mean + ids[user], atol=1e-6)
        assert torch.allclose(history_only[row], mean, atol=1e-6)
    assert torch.allclose(both[2], ids[3], atol=1e-6)  # no items: the id part alone
    assert torch.equal(history_only[2], torch.zeros(3))


def test_id_tower_ignores_history_and_include_user_id_false_gives_zero():
    model = _model(user_tower="id")
    users = torch.tensor([1, 3])
    assert torch.equal(model.encode_users(users), model.user_embedding.weight.detach()[users])
    assert torch.equal(encode(model, users, _history()), model.encode_users(users))
    assert torch.equal(model.encode_users(users, include_user_id=False), torch.zeros(2, 3))


@pytest.mark.parametrize("user_tower", ["history", "history+id"])
@pytest.mark.parametrize("normalize", [False, True])
def test_fold_in_is_history_part_of_new_players(user_tower, normalize):
    model = _model(user_tower=user_tower, normalize=normalize)
    lists = [[4, 1], [3], [5, 0, 2], []]  # OWNED, in another order within each user
    folded = model.fold_in(UserHistory.from_item_lists(lists))
    assert folded.shape == (4, 3) and not folded.requires_grad
    # the same item lists as a training history, encoded without the id part
    same = encode(model, torch.arange(4), _history(), include_user_id=False)
    assert torch.allclose(folded, same, atol=1e-6)
    table = model.history_embedding.weight.detach()
    for user in (0, 1, 2):
        expected = _mean(table, lists[user])
        if normalize:
            expected = expected / expected.norm()
        assert torch.allclose(folded[user], expected, atol=1e-5), user
    assert torch.equal(folded[3], torch.zeros(3))


def test_fold_in_on_id_tower_raises():
    model = _model(user_tower="id")
    with pytest.raises(ValueError, match="history"):
        model.fold_in(UserHistory.from_item_lists([[0, 1]]))


@pytest.mark.parametrize("user_tower", ["ID", "mean", "", "history+ID"])
def test_invalid_user_tower_raises(user_tower):
    with pytest.raises(ValueError, match="user_tower must be one of id, history, history\\+id"):
        TwoTower(2, 2, 2, user_tower=user_tower)


@pytest.mark.parametrize(
    ("user_tower", "names"),
    [
        ("id", {"item_embedding.weight", "user_embedding.weight"}),
        ("history", {"item_embedding.weight", "history_embedding.weight"}),
        (
            "history+id",
            {"item_embedding.weight", "history_embedding.weight", "user_embedding.weight"},
        ),
    ],
)
def test_each_tower_has_only_its_tables(user_tower, names):
    model = TwoTower(4, 6, 3, user_tower=user_tower, normalize=True)
    assert set(model.state_dict()) == names
    assert model.model_args()["user_tower"] == user_tower and model.model_args()["normalize"]


# --- gradients -----------------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
def test_gradients_reach_history_and_item_tables_and_are_finite(normalize):
    model = _model(normalize=normalize)
    history = _history()
    # user 1's only game is its positive, so its pooled vector is zero: gradients must stay finite
    users, items = torch.tensor([0, 1, 2]), torch.tensor([1, 3, 0])
    logits = model(users, items, history.sample_bags(torch.tensor([1, 3, 0]), 50, None))
    loss = F.cross_entropy(logits, torch.arange(len(logits)))
    loss.backward()
    for name in ("history_embedding", "item_embedding"):
        grad = getattr(model, name).weight.grad
        assert grad is not None, name
        assert torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name
    history_grad = model.history_embedding.weight.grad
    # the pooled games that remain after exclusion get gradient ...
    for item in (4, 2, 5):
        assert history_grad[item].abs().sum() > 0, item
    # ... the excluded positives, pooled by no other user in the batch, get none
    for item in (1, 3, 0):
        assert torch.allclose(history_grad[item], torch.zeros(3), atol=1e-6), item
    item_grad = model.item_embedding.weight.grad
    assert torch.equal(item_grad[[2, 4, 5]], torch.zeros(3, 3))  # not in the batch


@pytest.mark.parametrize("normalize", [False, True])
def test_sparse_gradients_equal_dense_ones_and_cover_only_touched_rows(normalize):
    """Sparse gradients are the dense gradients restricted to the rows the batch used."""
    users, items = torch.tensor([0, 1, 2]), torch.tensor([1, 3, 0])
    grads = {}
    for sparse in (False, True):
        model = _model(normalize=normalize).use_sparse_gradients(sparse)
        logits = model(users, items, _history().sample_bags(torch.tensor([1, 3, 0]), 50, None))
        F.cross_entropy(logits, torch.arange(len(logits))).backward()
        grads[sparse] = {
            name: param.grad for name, param in model.named_parameters() if param.grad is not None
        }
    assert (
        set(grads[True])
        == set(grads[False])
        == {
            "item_embedding.weight",
            "history_embedding.weight",
        }
    )
    for name, dense in grads[False].items():
        sparse = grads[True][name]
        assert sparse.is_sparse and not dense.is_sparse, name
        assert torch.allclose(sparse.to_dense(), dense, atol=1e-6), name
    touched_items = set(grads[True]["item_embedding.weight"].coalesce().indices()[0].tolist())
    assert touched_items == {0, 1, 3}  # the batch's items, not the whole table
