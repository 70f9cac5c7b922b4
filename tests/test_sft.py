"""Instruction tuning pieces (encoding_world.sft): the template, the form checker, requests
from poems, and the masked-loss batch. A tiny vocabulary and a tiny random GPT: seconds."""
import pytest
import torch
import torch.nn.functional as F

from encoding_world import lm_data, sft, train
from encoding_world.data import Poem
from encoding_world.gpt import GPT, GPTConfig
from encoding_world.lm_data import CharVocab

QUATRAIN = "春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"
SEVEN = "朝辞白帝彩云间，千里江陵一日还。两岸猿声啼不住，轻舟已过万重山。"
EIGHT = "国破山河在，城春草木深。感时花溅泪，恨别鸟惊心。烽火连三月，家书抵万金。白头搔更短，浑欲不胜簪。"


@pytest.fixture(scope="module")
def vocab():
    chars = sorted(set(QUATRAIN + SEVEN + EIGHT + "问答题含五七绝律春晓早发白帝城望"))
    return CharVocab(chars)


def test_render_is_the_template():
    request = sft.Request("五绝", "春晓", "花")
    assert request.text == "五绝题春晓含花"
    assert sft.Request("七绝", "早发白帝城").text == "七绝题早发白帝城"
    assert sft.render(request.text) == "\n问五绝题春晓含花答"
    assert sft.render(request.text, QUATRAIN) == "\n问五绝题春晓含花答" + QUATRAIN + "\n"


def test_request_refuses_bad_fields():
    with pytest.raises(ValueError, match="form"):
        sft.Request("七律", "登高")
    with pytest.raises(ValueError, match="title"):
        sft.Request("五绝", "")
    with pytest.raises(ValueError, match="title"):
        sft.Request("五绝", "九" * (sft.MAX_TITLE + 1))
    with pytest.raises(ValueError, match="char"):
        sft.Request("五绝", "春晓", "花落")


def test_every_form_fits_the_context():
    # END + 问 + form + 题 + the longest title + 含 + char + 答 + the poem: the inputs (all but
    # the closing END) must fit in the mini-GPT's 64 characters.
    for form, (n, lines) in sft.FORMS.items():
        request = sft.Request(form, "题" * sft.MAX_TITLE, "花")
        assert len(sft.render(request.text, "x" * (n + 1) * lines)) - 1 <= 64, form


def test_form_of_and_in_form():
    assert sft.form_of(QUATRAIN) == "五绝" and sft.in_form(QUATRAIN, "五绝")
    assert sft.form_of(SEVEN) == "七绝" and sft.form_of(EIGHT) == "五律"
    assert not sft.in_form(QUATRAIN, "七绝")
    assert sft.form_of(QUATRAIN[:-1]) is None                     # no final stop
    assert sft.form_of(QUATRAIN + QUATRAIN[:12]) is None          # six lines
    assert sft.form_of(QUATRAIN.replace("。夜", "，夜")) is None    # a couplet must end with 。？！
    assert sft.form_of("春眠不觉晓？处处闻啼鸟。夜来风雨声，花落知多少！") is None
    assert sft.form_of("春眠不觉晓，处处闻啼鸟？夜来风雨声，花落知多少！") == "五绝"
    assert sft.form_of(QUATRAIN + "\n") is None                   # the answer is checked without its END
    with pytest.raises(ValueError, match="form"):
        sft.in_form(QUATRAIN, "宋词")


def test_follows_needs_the_form_and_the_character():
    assert sft.follows(sft.Request("五绝", "春晓", "花"), QUATRAIN)
    assert sft.follows(sft.Request("五绝", "春晓"), QUATRAIN)
    assert not sft.follows(sft.Request("五绝", "春晓", "月"), QUATRAIN)
    assert not sft.follows(sft.Request("七绝", "春晓", "花"), QUATRAIN)


def test_make_requests_keeps_poems_that_fit(vocab):
    poems = [Poem("孟浩然", "春晓", QUATRAIN), Poem("李白", "早发白帝城", SEVEN), Poem("杜甫", "春望", EIGHT),
             Poem("某", "春晓", QUATRAIN[:-1]),             # not in a form
             Poem("某", "春 晓", QUATRAIN),                  # a space in the title
             Poem("某", "春晓早发白帝城望", QUATRAIN + "x"),    # not in a form either
             Poem("某", "春晓早发白帝城望春", QUATRAIN),       # title too long
             Poem("某", "秋晓", QUATRAIN)]                    # 秋 not in the vocabulary
    pairs = sft.make_requests(poems, vocab, char_share=1.0)
    assert [(r.form, r.title, body) for r, body in pairs] == [("五绝", "春晓", QUATRAIN), ("七绝", "早发白帝城", SEVEN),
                                                              ("五律", "春望", EIGHT)]
    for request, body in pairs:
        assert request.char in body and request.char not in request.title and request.char not in "，。？！"
    assert sft.make_requests(poems, vocab, char_share=1.0) == pairs          # the seed fixes the characters
    assert all(r.char == "" for r, _ in sft.make_requests(poems, vocab, char_share=0.0))
    with pytest.raises(ValueError, match="char_share"):
        sft.make_requests(poems, vocab, char_share=1.5)


def test_encode_masks_the_prompt(vocab):
    prompt, answer = sft.render("五绝题春晓"), QUATRAIN + "\n"
    x, y = sft.encode(prompt, answer, vocab)
    ids = vocab.encode(prompt + answer)
    assert x == ids[:-1] and len(y) == len(x)
    kept = [t for t in y if t != sft.IGNORE_INDEX]
    assert kept == vocab.encode(answer)                            # the answer and its END, nothing else
    assert y[:len(prompt) - 1] == [sft.IGNORE_INDEX] * (len(prompt) - 1)
    x2, y2 = sft.encode(prompt, answer, vocab, mask_prompt=False)
    assert x2 == x and y2 == ids[1:]
    with pytest.raises(ValueError, match="prompt"):
        sft.encode("问五绝题春晓答", answer, vocab)
    with pytest.raises(ValueError, match="END"):
        sft.encode(prompt, QUATRAIN, vocab)
    with pytest.raises(KeyError):
        sft.encode(prompt, "秋" + answer, vocab)                    # strict: no silent □ in training data


def test_sft_batch_pads_on_the_right_and_the_loss_ignores_padding(vocab):
    examples = [(sft.render("五绝题春晓"), QUATRAIN + "\n"), (sft.render("五律题春望含花"), EIGHT + "\n")]
    x, y = sft.sft_batch(examples, vocab)
    assert x.shape == y.shape == (2, len(examples[1][0]) + len(examples[1][1]) - 1)
    short = len(examples[0][0]) + len(examples[0][1]) - 1
    assert (x[0, short:] == vocab.index["\n"]).all() and (y[0, short:] == sft.IGNORE_INDEX).all()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=64, n_layer=1, n_head=2, d_model=16)).eval()
    with torch.no_grad():
        logits = model(x)[0]
        alone = model(x[:1, :short])[0]
    assert torch.allclose(logits[0, :short], alone[0], atol=1e-6)   # padding never changes real positions
    # The masked loss by hand: mean of -log p(target) over the targets that count.
    log_probs = torch.log_softmax(logits, dim=-1)
    counted = y != sft.IGNORE_INDEX
    by_hand = -log_probs[counted].gather(-1, y[counted].unsqueeze(-1)).mean()
    library = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=sft.IGNORE_INDEX)
    assert torch.allclose(by_hand, library, atol=1e-6)
    with pytest.raises(ValueError, match="block_size"):
        sft.sft_batch(examples, vocab, block_size=40)
    with pytest.raises(ValueError, match="empty"):
        sft.sft_batch([], vocab)


def test_gpt_loss_and_mean_loss_ignore_masked_targets(vocab):
    examples = [(sft.render("五绝题春晓"), QUATRAIN + "\n"), (sft.render("五律题春望含花"), EIGHT + "\n"),
                (sft.render("七绝题早发白帝城"), SEVEN + "\n")]
    x, y = sft.sft_batch(examples, vocab)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=64, n_layer=1, n_head=2, d_model=16)).eval()
    with torch.no_grad():
        logits, loss = model(x, y)
    expected = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)
    assert torch.allclose(loss, expected, atol=1e-6)
    # mean_loss in batches of 1 and 2 weighs every counted target the same as one batch of 3.
    whole = lm_data.mean_loss(model, (x, y))
    assert whole == pytest.approx(loss.item(), rel=1e-5)
    assert lm_data.mean_loss(model, (x, y), batch_size=2) == pytest.approx(whole, rel=1e-5)
    assert lm_data.mean_loss(model, (x, y), batch_size=1) == pytest.approx(whole, rel=1e-5)
    with pytest.raises(ValueError, match="-1, outside the vocabulary"):
        model(x, y.masked_fill(y == sft.IGNORE_INDEX, -1))     # only -100 means "ignored"
    with pytest.raises(ValueError, match="no target to score"):
        lm_data.mean_loss(model, (x, torch.full_like(y, sft.IGNORE_INDEX)))


def test_sft_batches_feed_train_steps(vocab):
    examples = [(sft.render("五绝题春晓"), QUATRAIN + "\n")] * 4 + [(sft.render("七绝题早发白帝城"), SEVEN + "\n")] * 2
    batches = list(sft.sft_batches(examples, vocab, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 2]
    assert all(torch.equal(a, b) for a, b in zip(batches[1], sft.sft_batch(examples[4:], vocab)))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), block_size=64, n_layer=1, n_head=2, d_model=16))
    optimizer = train.make_optimizer(model.parameters(), lr=1e-2)
    losses = train.train_steps(model, optimizer, sft.sft_batches(examples * 5, vocab, batch_size=3), steps=10)
    assert len(losses) == 10 and losses[-1] < losses[0]
    with pytest.raises(ValueError, match="batch_size"):
        next(sft.sft_batches(examples, vocab, batch_size=0))
    # Too few examples for the steps asked: a clear error naming the step, not a bare StopIteration.
    with pytest.raises(ValueError, match="batches ran out at step 3 of 10"):
        train.train_steps(model, optimizer, sft.sft_batches(examples, vocab, batch_size=3), steps=10)
