import pickle

from celery.exceptions import Reject

from compute.verify import HandBack


def test_a_hand_back_keeps_its_pause_across_the_pool_pipe():
    back = pickle.loads(pickle.dumps(HandBack("ran another replica", requeue=True, pause=2.0)))

    assert isinstance(back, Reject) and back.requeue is True and back.pause == 2.0
    assert str(back.reason) == "ran another replica"
